"""Modbus RTU/TCP I/O modules (pymodbus): digital inputs (door contacts, fire alarms) and coils
(relays as door outputs), described by I/O-module profiles (``firmware_profiles/modbus/``).

config (leaf) · profile (the register maps, data validated by a model) · driver (I/O: pymodbus'
asyncio clients) · sim (test and demo equipment, a pymodbus server, reached through the registry).
Modbus framing is pymodbus' own, so there is no codec module here. Import the module you need; the
public names are also exported from :mod:`device_drivers`."""
