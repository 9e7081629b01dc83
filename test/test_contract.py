"""Contract between the Python code and this package's interface files and manifests.

`vla_ros/ros/interface_fields.py` lists every field the code reads or writes on our own .action/.msg
types; here the files are parsed with the ROS runtime's own rosidl_adapter (and converted to IDL and
parsed with rosidl_parser, the steps rosidl_generate_interfaces runs in a colcon build), and each
listed field must exist with the listed type. A renamed or retyped field fails here, not on a robot
(test_contract_catches_a_renamed_field shows it on a copy of the files).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vla_ros
from vla_ros.core.runtime_types import TerminationReason
from vla_ros.ros import interface_fields

REPO = Path(__file__).resolve().parent.parent

# rosidl .msg primitive names for the IDL basic types rosidl_parser reports.
IDL_TO_MSG_TYPE = {"double": "float64", "float": "float32", "boolean": "bool", "octet": "byte"}


def _interface_file(root: Path, kind: str, name: str) -> Path:
    return root / kind / f"{name}.{kind}"


def _parsed_sections(root: Path, kind: str, name: str):
    """{section: rosidl_adapter MessageSpecification} for one interface file."""
    from rosidl_adapter.parser import parse_action_file, parse_message_file, parse_service_file

    path = _interface_file(root, kind, name)
    if kind == "action":
        spec = parse_action_file(interface_fields.PACKAGE, str(path))
        return {"goal": spec.goal, "result": spec.result, "feedback": spec.feedback}
    if kind == "srv":
        spec = parse_service_file(interface_fields.PACKAGE, str(path))
        return {"request": spec.request, "response": spec.response}
    return {None: parse_message_file(interface_fields.PACKAGE, str(path))}


def interface_problems(root: Path) -> list[str]:
    """Every mismatch between interface_fields' tables and the interface files under `root`."""
    problems = []
    for (kind, name, section), wanted in interface_fields.INTERFACES.items():
        where = f"{kind}/{name}.{kind}" + (f" ({section})" if section else "")
        if not _interface_file(root, kind, name).is_file():
            problems.append(f"{where}: file missing")
            continue
        spec = _parsed_sections(root, kind, name)[section]
        actual = {field.name: str(field.type) for field in spec.fields}
        for field, type_name in wanted.items():
            if field not in actual:
                problems.append(f"{where}: field {field!r} used by the code is missing "
                                f"(fields there: {sorted(actual)})")
            elif actual[field] != type_name:
                problems.append(f"{where}: field {field!r} is {actual[field]}, the code expects {type_name}")
        for field in sorted(set(actual) - set(wanted)):
            problems.append(f"{where}: field {field!r} is not in interface_fields (the code never sets it)")
        constants = {c.name: c.value for c in spec.constants}
        for constant, value in interface_fields.CONSTANTS.get((kind, name, section), {}).items():
            if constants.get(constant) != value:
                problems.append(f"{where}: constant {constant} is {constants.get(constant)!r}, "
                                f"the code expects {value!r}")
    return problems


@pytest.mark.ros
def test_interface_files_match_the_fields_the_code_uses():
    assert interface_problems(REPO) == []


@pytest.mark.ros
def test_contract_catches_a_renamed_field(tmp_path):
    for kind in ("action", "msg", "srv"):
        shutil.copytree(REPO / kind, tmp_path / kind)
    action = tmp_path / "action" / "ExecuteInstruction.action"
    text = action.read_text()
    assert "\nfloat64 inference_latency_s\n" in text
    action.write_text(text.replace("\nfloat64 inference_latency_s\n", "\nfloat64 latency_s\n"))
    problems = interface_problems(tmp_path)
    assert any("'inference_latency_s' used by the code is missing" in p for p in problems), problems


def _idl_type_name(member_type) -> str:
    from rosidl_parser.definition import BasicType, NamespacedType, UnboundedSequence, UnboundedString

    if isinstance(member_type, UnboundedSequence):
        return _idl_type_name(member_type.value_type) + "[]"
    if isinstance(member_type, UnboundedString):
        return "string"
    if isinstance(member_type, BasicType):
        return IDL_TO_MSG_TYPE.get(member_type.typename, member_type.typename)
    if isinstance(member_type, NamespacedType):
        return f"{member_type.namespaces[0]}/{member_type.name}"
    return type(member_type).__name__


@pytest.mark.ros
@pytest.mark.parametrize(("kind", "name"), sorted({(k, n) for k, n, _ in interface_fields.INTERFACES}))
def test_interfaces_convert_to_idl_like_in_a_colcon_build(kind, name, tmp_path):
    """rosidl_adapter .msg/.action -> .idl, then rosidl_parser: what rosidl_generate_interfaces does."""
    from rosidl_parser.definition import Action, IdlLocator, Message, Service
    from rosidl_parser.parser import parse_idl_file

    # In a process of its own, as in a build: empy (the template engine) replaces sys.stdout,
    # which clashes with pytest's output capture.
    convert = f"""
import sys
from pathlib import Path
from rosidl_adapter.{kind} import convert_{kind}_to_idl
print(convert_{kind}_to_idl(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
"""
    run = subprocess.run(
        [sys.executable, "-c", convert, str(REPO), interface_fields.PACKAGE, f"{kind}/{name}.{kind}",
         str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"rosidl_adapter failed on {kind}/{name}.{kind}:\n{run.stderr}"
    idl_path = Path(run.stdout.strip().splitlines()[-1])
    content = parse_idl_file(IdlLocator(tmp_path, idl_path.relative_to(tmp_path))).content
    if kind == "action":
        (action,) = content.get_elements_of_type(Action)
        structures = {"goal": action.goal, "result": action.result, "feedback": action.feedback}
    elif kind == "srv":
        (service,) = content.get_elements_of_type(Service)
        structures = {"request": service.request_message, "response": service.response_message}
    else:
        (message,) = content.get_elements_of_type(Message)
        structures = {None: message}
    for section, structure in structures.items():
        members = {m.name: _idl_type_name(m.type) for m in structure.structure.members
                   if m.name != "structure_needs_at_least_one_member"}  # IDL's stand-in for an empty part
        assert members == interface_fields.INTERFACES[(kind, name, section)], (kind, name, section)
        constants = {c.name: c.value for c in structure.constants}
        for constant, value in interface_fields.CONSTANTS.get((kind, name, section), {}).items():
            assert constants.get(constant) == value


def test_every_runtime_termination_reason_is_an_action_constant():
    missing = {r.value for r in TerminationReason} - set(interface_fields.TERMINATION_REASONS)
    assert not missing, f"TerminationReason values without an ExecuteInstruction constant: {missing}"


def test_fill_refuses_fields_outside_the_table():
    class Result:  # stands in for the generated type, which only a colcon build produces
        pass

    with pytest.raises(KeyError, match="stepz"):
        interface_fields.fill(Result(), interface_fields.EXECUTE_RESULT, stepz=3)
    filled = interface_fields.fill(Result(), interface_fields.EXECUTE_RESULT, steps=3.0, success=1)
    assert (filled.steps, filled.success) == (3, True)
    assert type(filled.steps) is int


def test_package_xml_is_a_valid_format3_ament_cmake_manifest():
    catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg parses package.xml")
    package = catkin_pkg.parse_package(str(REPO / "package.xml"))
    package.validate()
    assert package.package_format == 3
    assert package.name == "vla_ros"
    pyproject_version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert pyproject_version, "pyproject.toml has no version line"
    assert package.version == pyproject_version.group(1) == vla_ros.__version__, \
        "package.xml, pyproject.toml and vla_ros.__version__ disagree on the version"
    assert [e.content for e in package.exports if e.tagname == "build_type"] == ["ament_cmake"]
    assert "rosidl_interface_packages" in [g.name for g in package.member_of_groups]
    depends = {d.name for d in package.build_depends + package.exec_depends}
    assert {"action_msgs", "std_msgs", "rclpy"} <= depends


def test_every_executable_names_an_existing_main():
    table = (REPO / "resource" / "executables").read_text().splitlines()
    entries = [line.split() for line in table if line.strip() and not line.startswith("#")]
    assert entries, "resource/executables lists no executable"
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "resource/executables" in cmake, "CMakeLists.txt no longer installs from the table"
    for name, target in entries:
        module, function = target.split(":")
        path = REPO.joinpath(*module.split(".")).with_suffix(".py")
        if not path.is_file():
            pytest.fail(f"executable {name}: {path.relative_to(REPO)} does not exist")
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert function in defined, f"executable {name}: {module} defines no {function}()"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
