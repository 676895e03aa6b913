"""The view's input messages to CDP parameters, without a browser: the scaling of a point on
the viewer's screen element to the page, key events with and without text, and refusals."""

from __future__ import annotations

import pytest

from browserd.daemon.control.view import BadInput, key_params, mouse_params

META = {"deviceWidth": 800, "deviceHeight": 600, "pageScaleFactor": 1, "offsetTop": 0}


def test_a_point_scales_from_the_element_to_the_page() -> None:
    click = {"t": "mouse", "type": "down", "x": 0.25, "y": 0.5, "button": "left",
             "buttons": 1, "clicks": 1, "modifiers": 0}
    assert mouse_params(click, META) == {"type": "mousePressed", "x": 200.0, "y": 300.0,
                                         "button": "left", "buttons": 1, "clickCount": 1,
                                         "modifiers": 0}
    zoomed = {**META, "pageScaleFactor": 2, "offsetTop": 40}
    params = mouse_params(click, zoomed)
    assert (params["x"], params["y"]) == (100.0, 130.0)
    wheel = mouse_params({"t": "wheel", "x": 1, "y": 1, "dx": 0, "dy": 120}, META)
    assert wheel["type"] == "mouseWheel" and (wheel["x"], wheel["y"], wheel["deltaY"]) == (
        800.0, 600.0, 120.0)


def test_points_outside_are_clamped_and_bad_messages_refused() -> None:
    params = mouse_params({"t": "mouse", "type": "move", "x": 7, "y": -3}, META)
    assert (params["x"], params["y"]) == (800.0, 0.0)
    for bad in ({"t": "mouse", "type": "down", "x": "1", "y": 0},
                {"t": "mouse", "type": "down", "x": float("nan"), "y": 0},
                {"t": "mouse", "type": "drag", "x": 0, "y": 0},
                {"t": "mouse", "type": "down", "x": 0, "y": 0, "button": "thumb"}):
        with pytest.raises(BadInput):
            mouse_params(bad, META)


def test_keys_type_text_unless_a_shortcut() -> None:
    typed = key_params({"type": "down", "key": "a", "code": "KeyA", "keyCode": 65})
    assert typed["type"] == "keyDown" and typed["text"] == "a"
    enter = key_params({"type": "down", "key": "Enter", "code": "Enter", "keyCode": 13})
    assert enter["text"] == "\r"
    shortcut = key_params({"type": "down", "key": "a", "code": "KeyA", "keyCode": 65,
                           "modifiers": 2})
    assert shortcut["type"] == "rawKeyDown" and "text" not in shortcut
    shifted = key_params({"type": "down", "key": "A", "code": "KeyA", "keyCode": 65,
                          "modifiers": 8})
    assert shifted["text"] == "A"
    arrow = key_params({"type": "down", "key": "ArrowLeft", "code": "ArrowLeft",
                        "keyCode": 37})
    assert arrow["type"] == "rawKeyDown" and arrow["windowsVirtualKeyCode"] == 37
    assert key_params({"type": "up", "key": "a", "code": "KeyA"})["type"] == "keyUp"
    with pytest.raises(BadInput):
        key_params({"type": "press", "key": "a"})
    with pytest.raises(BadInput):
        key_params({"type": "down", "key": "x" * 100})
