"""What the tests share: waiting on a condition, a Mosquitto of their own, a fake clock, a fault
proxy, the agent-with-simulators harness and the import-rule checker.

Import from the submodules (``from tests.support.wait import wait_until``): ``agent_harness``
imports the whole gateway, and a unit test of a codec should not pay for that.
"""
