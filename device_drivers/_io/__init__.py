"""Parts every family shares: the one serial-port owner, the one reconnect backoff, the readings
queue of a driver, the shared config models, and the simulators' line endpoints. Private to the
package: the public names are re-exported from :mod:`device_drivers`."""
