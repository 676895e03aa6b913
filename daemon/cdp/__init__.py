"""The Chrome DevTools Protocol: the authenticated endpoint clients attach to (proxy, its HTTP
front in http_front, command records in commands, sans-io WebSocket scanning in ws_frames and
ws_messages, the peer behind a socket in peers) and the daemon's own CDP client (client). May
import system and base."""
