"""ZKTeco attendance terminals: pull over the terminal's TCP protocol (port 4370, pyzk) and the
terminal's HTTP push protocol (``/iclock``) served by the gateway.

config (leaf) · codec (sans-I/O, where there are bytes) · driver (I/O) · sim (test and demo
equipment, reached through the registry). Import the module you need; the public names are also
exported from :mod:`device_drivers`."""
