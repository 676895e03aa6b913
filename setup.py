"""Which packages the distribution holds; everything else about it is in pyproject.toml.

The folders daemon/ and client/ become the packages browserd.daemon and browserd.client, and
systemd/ the package data browserd.systemd (the unit files that `browserd install-units`
writes). Sub-packages are found, never listed: a listed one is too easily forgotten (the wheel
once shipped without browserd/daemon/methods/, and only an installed daemon noticed).
"""

from setuptools import find_namespace_packages, find_packages, setup

FOLDERS = {"browserd.daemon": "daemon", "browserd.client": "client"}

packages = []
for package, folder in FOLDERS.items():
    packages += [package, *(f"{package}.{sub}" for sub in find_packages(folder))]

# Data only: each folder of unit files is a (namespace) package whose files all ship.
units = ["browserd.systemd",
         *(f"browserd.systemd.{sub}" for sub in find_namespace_packages("systemd"))]

setup(
    packages=[*packages, *units],
    package_dir={**FOLDERS, "browserd.systemd": "systemd"},
    package_data={"browserd.daemon": ["py.typed"], "browserd.client": ["py.typed"],
                  "browserd.daemon.web": ["static/*"],
                  **{folder: ["*"] for folder in units}},
)
