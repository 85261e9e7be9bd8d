#!/usr/bin/env python3
"""A pymodbus client for the gateway end-to-end tests.

usage: gateway_client.py HOST PORT OP...
  OP = read:UNIT:REG:COUNT        FC3 read of COUNT registers from register number REG (1-based)
       write:UNIT:REG:V1,V2,...   FC16 write at register number REG
Prints one JSON object per OP: {"words": [...]} or {"exception": code} or {"error": "..."}.
"""
import inspect
import json
import sys

from pymodbus.client import ModbusTcpClient

host, port, ops = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
client = ModbusTcpClient(host, port=port, timeout=3, retries=0)
if not client.connect():
    print(json.dumps({"error": f"cannot connect to {host}:{port}"}))
    sys.exit(1)
params = inspect.signature(client.read_holding_registers).parameters
unit_kw = "device_id" if "device_id" in params else "slave"

for op in ops:
    kind, unit, reg, arg = op.split(":")
    kw = {unit_kw: int(unit)}
    try:
        if kind == "read":
            rr = client.read_holding_registers(int(reg) - 1, count=int(arg), **kw)
        else:
            rr = client.write_registers(int(reg) - 1, [int(v) for v in arg.split(",")], **kw)
        if rr.isError():
            print(json.dumps({"exception": getattr(rr, "exception_code", None)}))
        else:
            print(json.dumps({"words": list(getattr(rr, "registers", []) or [])}))
    except Exception as e:  # noqa: BLE001 - report, the test decides
        print(json.dumps({"error": str(e)}))
client.close()
