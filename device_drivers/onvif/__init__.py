"""ONVIF IP cameras: WS-Discovery, profiles and stream URIs, and the camera's own events (motion,
tamper) through onvif-zeep-async.

config (leaf) · codec (sans-I/O, where there are bytes) · driver (I/O) · sim (test and demo
equipment, reached through the registry). Import the module you need; the public names are also
exported from :mod:`device_drivers`."""
