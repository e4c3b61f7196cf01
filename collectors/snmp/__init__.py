"""SNMP collector (kind ``snmp``): availability, interface state and link speed of network kit.

Modules: :mod:`.config` (auths, targets, OID mappings), :mod:`.ber` (the v2c hot-path codec),
:mod:`.transport` (shared UDP socket), :mod:`.session` (builtin v2c and pysnmp sessions, error
reasons), :mod:`.walk` (column walker with limits), :mod:`.collector` (samples).
"""

from collectors.snmp.collector import SnmpCollector
from collectors.snmp.config import SnmpV1Auth, SnmpV2cAuth, SnmpV3Auth

COLLECTORS = [SnmpCollector]
AUTH_MODELS = [SnmpV1Auth, SnmpV2cAuth, SnmpV3Auth]
