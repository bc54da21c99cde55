"""Robot specs and policy contracts: bad files are refused with the file and the field named."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from s2r import ActionMapping, ContractError, ObsTerm, PolicyContract, SpecError, load_robot_spec, robot_spec
from s2r.spec import shipped_robots_dir


def write_spec(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((shipped_robots_dir() / "arm" / "arm.yaml").read_text())
    data["mjcf"] = str(shipped_robots_dir() / "arm" / "arm.xml")
    edit(data)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_robot_loads_and_compiles_with_one_actuator_per_actuated_joint_in_spec_order():
    from s2r.sim.model import compile_model

    names = sorted(p.name for p in shipped_robots_dir().iterdir() if (p / f"{p.name}.yaml").is_file())
    assert {"pendulum", "cartpole", "arm"} <= set(names)
    hashes = set()
    for name in names:
        spec = robot_spec(name)
        model = compile_model(spec, "position")  # refuses a spec whose joints or ranges disagree with the MJCF
        assert spec.name == name
        assert [model.actuator(i).name for i in range(model.nu)] == list(spec.actuated_joint_names)
        assert robot_spec(name).hash == spec.hash, "a spec's hash is the same on every load"
        hashes.add(spec.hash)
    assert len(hashes) == len(names), "every robot has its own hash"


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["joints"][1].pop("kp"), "joints[1].kp: missing"),
        (lambda d: d["joints"][0].update(kd="soft"), "joints[0].kd: expected float"),
        (lambda d: d["joints"][2].update(defualt_position=0.0), "joints[2].defualt_position: unknown field"),
        (lambda d: d.update(control_period=-0.01), "control_period"),
        (lambda d: d["joints"][0].update(limits=[1.0, -1.0]), "joints[0].limits"),
        (lambda d: d["joints"][1].update(name="yaw"), "joints[1].name: duplicate"),
        (lambda d: d.pop("name"), "name: missing"),
        (lambda d: d.update(mjcf="missing.xml"), "mjcf"),
    ],
)
def test_a_malformed_robot_yaml_names_the_file_and_the_field(tmp_path, edit, field):
    path = write_spec(tmp_path, edit)
    with pytest.raises(SpecError) as error:
        load_robot_spec(path)
    assert str(path) in str(error.value) and field in str(error.value)


def test_a_yaml_that_is_not_yaml_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_robot_spec(path)


def arm_contract() -> PolicyContract:
    spec = robot_spec("arm")
    terms = (ObsTerm("joint_pos", noise=0.01), ObsTerm("joint_vel", 0.2), ObsTerm("target"), ObsTerm("last_action"))
    return PolicyContract.build(spec=spec, terms=terms, action=ActionMapping.for_robot(spec, "position", 1.0),
                                provenance={"task": "reach"})


def test_contract_round_trips_through_json():
    contract = arm_contract()
    assert PolicyContract.from_json(contract.to_json()) == contract
    assert contract.inputs == {"target": 3, "last_action": 3}
    assert contract.check(robot_spec("arm")) == []


def test_a_quadrotor_contract_reads_back_on_the_robot_side_without_the_simulator(tmp_path):
    """The flight terms (position_error, action_history, ...) are known wherever a contract is read:
    `s2r export` of a quadrotor run once failed with "unknown term 'position_error'"."""
    import subprocess
    import sys

    from s2r.flight import ACTION_HISTORY  # noqa: F401  (the terms, in this process)

    spec = robot_spec("crazyflie")
    terms = (ObsTerm("position_error"), ObsTerm("base_rotation_matrix"), ObsTerm("action_history"))
    contract = PolicyContract.build(spec=spec, terms=terms, action=ActionMapping.for_robot(spec, "thrust", 1.0),
                                    provenance={"task": "quadrotor_hover"})
    (tmp_path / "contract.json").write_text(contract.to_json())
    probe = ("import sys; from s2r.contract import PolicyContract; "
             "c = PolicyContract.from_json(open(sys.argv[1]).read()); "
             "assert 'mujoco' not in sys.modules and 'torch' not in sys.modules; print(c.observation[0].name)")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "contract.json")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "position_error"


def test_a_policy_for_the_arm_refuses_a_robot_whose_joint_order_differs(tmp_path):
    def swap(d):
        d["joints"][0], d["joints"][1] = d["joints"][1], d["joints"][0]

    spec = load_robot_spec(write_spec(tmp_path, swap))
    with pytest.raises(ContractError, match=r"joint_names\[0\]: policy expects 'yaw', the robot has 'shoulder'"):
        arm_contract().check(spec)


def test_a_contract_whose_observation_sizes_differ_is_refused():
    contract = replace(arm_contract(), observation_sizes=(3, 3, 3, 4))
    with pytest.raises(ContractError, match=r"observation\[3\] \(last_action\)\.size: policy expects 4, the robot gives 3"):
        contract.check(robot_spec("arm"))


def test_a_contract_for_another_robot_is_refused():
    with pytest.raises(ContractError, match="robot: policy expects 'arm', spec is 'cartpole'"):
        arm_contract().check(robot_spec("cartpole"))


def test_changed_gains_are_a_warning_not_a_refusal(tmp_path):
    spec = load_robot_spec(write_spec(tmp_path, lambda d: d["joints"][0].update(kp=45.0)))
    warnings = arm_contract().check(spec)
    assert len(warnings) == 1 and "robot_spec_hash" in warnings[0]


def test_unknown_contract_versions_and_missing_fields_are_refused():
    data = arm_contract().to_dict()
    with pytest.raises(ContractError, match="contract version: 99 is not supported"):
        PolicyContract.from_dict({**data, "version": 99})
    del data["action"]
    with pytest.raises(ContractError, match="'action': missing"):
        PolicyContract.from_dict(data)
    with pytest.raises(ContractError, match="not valid JSON"):
        PolicyContract.from_json("{")


def test_action_mapping_scales_offsets_and_clips():
    spec = robot_spec("arm")
    mapping = ActionMapping.for_robot(spec, "position", 0.5, clip=1.0)
    command = mapping.to_command(np.array([[2.0, -0.5, 0.0]]))
    assert command.q.tolist() == [[0.5, -0.75, 1.0]]
    assert command.kp.tolist() == [[40.0, 60.0, 40.0]] and command.tau_ff.tolist() == [[0.0, 0.0, 0.0]]
    torque = ActionMapping.for_robot(robot_spec("cartpole"), "torque", 20.0).to_command(np.array([0.25]))
    assert torque.tau_ff.tolist() == [5.0] and torque.kp.tolist() == [0.0]


def test_an_mjcf_whose_joint_ranges_disagree_with_the_spec_is_refused(tmp_path):
    from s2r.sim.model import compile_model

    xml = (shipped_robots_dir() / "arm" / "arm.xml").read_text().replace('<compiler angle="radian"/>', "")
    (tmp_path / "arm.xml").write_text(xml)
    spec = load_robot_spec(write_spec(tmp_path, lambda d: d.update(mjcf=str(tmp_path / "arm.xml"))))
    with pytest.raises(SpecError, match=r"joints\[0\]\.limits: .*angles in degrees"):
        compile_model(spec, "position")
