# One step of the CIM flow against the broker, with pywbem (the real client):
#   python3 hostd_flow.py URL CA_CERT USER PASSWORD ACTION [ARGS...]
# Prints `key value` lines the Rust test checks (and checks hostd's REST API between
# steps). A CIM error prints `cimerror <code>` and exits 0, so tests can assert it.
import sys
import time

import pywbem

url, cert, user, password, action = sys.argv[1:6]
args = sys.argv[6:]
c = pywbem.WBEMConnection(url, (user, password), default_namespace="root/cimv2", ca_certs=cert, timeout=60)


def vm_path(name):
    return pywbem.CIMInstanceName(
        "Mantle_ComputerSystem",
        keybindings={"CreationClassName": "Mantle_ComputerSystem", "Name": name},
        namespace="root/cimv2",
    )


def vsms():
    return c.EnumerateInstanceNames("CIM_VirtualSystemManagementService")[0]


def wait_job(job):
    # Generous: a graceful shutdown waits for the guest, and on Mantle under
    # QEMU's TCG everything is slow.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        j = c.GetInstance(job)
        if int(j["JobState"]) in (7, 8, 9, 10):
            return int(j["JobState"]), int(j["PercentComplete"])
        time.sleep(0.1)
    raise SystemExit("job did not finish")


def settings(name):
    vssd = c.Associators(vm_path(name), AssocClass="CIM_SettingsDefineState", ResultClass="CIM_VirtualSystemSettingData")[0]
    rasds = c.Associators(vssd.path, AssocClass="CIM_VirtualSystemSettingDataComponent")
    return vssd, rasds


def rasd(resource_type, **props):
    cls = "Mantle_StorageAllocationSettingData" if resource_type == 31 else "Mantle_ResourceAllocationSettingData"
    p = {"ResourceType": pywbem.Uint16(resource_type)}
    p.update(props)
    return pywbem.CIMInstance(cls, properties=p)


try:
    if action == "define":
        name, kernel = args
        vssd = pywbem.CIMInstance(
            "Mantle_VirtualSystemSettingData",
            properties={"ElementName": name, "VirtualSystemType": "DMTF:x86:64", "KernelFile": kernel, "Notes": ["defined over CIM"]},
        )
        resources = [
            rasd(3, VirtualQuantity=pywbem.Uint64(2)),
            rasd(4, VirtualQuantity=pywbem.Uint64(32), AllocationUnits="byte*2^20"),
            rasd(31, HostResource=[name + "-disk0.img"], VirtualQuantity=pywbem.Uint64(8), AllocationUnits="byte*2^20"),
            rasd(10, Connection=["VM Network"]),
        ]
        rc, out = c.InvokeMethod("DefineSystem", vsms(), SystemSettings=vssd, ResourceSettings=resources)
        print("rc", rc)
        if rc == 0:
            print("system", out["ResultingSystem"]["Name"])
    elif action == "state":
        name, state = args
        rc, out = c.InvokeMethod("RequestStateChange", vm_path(name), RequestedState=pywbem.Uint16(int(state)))
        print("rc", rc)
        if rc == 4096:
            print("job", *wait_job(out["Job"]))
            print("job-class", out["Job"].classname)
    elif action == "enabled":
        print("enabled", c.GetInstance(vm_path(args[0]), PropertyList=["EnabledState"])["EnabledState"])
    elif action == "list":
        for i in c.EnumerateInstances("CIM_ComputerSystem"):
            if i.classname == "Mantle_ComputerSystem":
                print("vm", i["Name"], i["EnabledState"])
    elif action == "settings":
        vssd, rasds = settings(args[0])
        print("vssd", vssd["ElementName"], vssd["KernelFile"], "|".join(vssd["Notes"] or []))
        for r in sorted(rasds, key=lambda r: int(r["ResourceType"])):
            print("rasd", int(r["ResourceType"]), r["VirtualQuantity"], ",".join(r["HostResource"] or []), ",".join(r["Connection"] or []))
    elif action == "memory":
        name, mib = args
        _, rasds = settings(name)
        mem = [r for r in rasds if r["ResourceType"] == 4][0]
        mem["VirtualQuantity"] = pywbem.Uint64(int(mib))
        rc, out = c.InvokeMethod("ModifyResourceSettings", vsms(), ResourceSettings=[mem])
        print("rc", rc)
    elif action == "notes":
        name, notes = args
        vssd, _ = settings(name)
        vssd["Notes"] = [notes]
        rc, _ = c.InvokeMethod("ModifySystemSettings", vsms(), SystemSettings=vssd)
        print("rc", rc)
    elif action == "remove-disk":
        _, rasds = settings(args[0])
        disk = [r.path for r in rasds if r["ResourceType"] == 31]
        rc, _ = c.InvokeMethod("RemoveResourceSettings", vsms(), ResourceSettings=disk)
        print("rc", rc)
    elif action == "destroy":
        rc, _ = c.InvokeMethod("DestroySystem", vsms(), AffectedSystem=vm_path(args[0]))
        print("rc", rc)
    else:
        raise SystemExit("unknown action " + action)
except pywbem.CIMError as e:
    print("cimerror", e.status_code)
