"""Wiegand readers wired to GPIO lines D0/D1 (libgpiod).

config (leaf) · codec (sans-I/O, where there are bytes) · driver (I/O) · sim (test and demo
equipment, reached through the registry). Import the module you need; the public names are also
exported from :mod:`device_drivers`."""
