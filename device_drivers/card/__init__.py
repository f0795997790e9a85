"""Serial card readers: EM4100/UID readers and Wiegand-to-serial converters.

config (leaf) · codec (sans-I/O, where there are bytes) · driver (I/O) · sim (test and demo
equipment, reached through the registry). Import the module you need; the public names are also
exported from :mod:`device_drivers`."""
