"""The MIT CAN codec: command and reply frames round-trip within one step of their fields, up to the range limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from s2r.hardware.drivers.can_imu import ImuReader, euler_from_quat, imu_quat, pack_imu
from s2r.hardware.drivers.mit_can_protocol import (
    ENTER_MOTOR_MODE,
    EXIT_MOTOR_MODE,
    KD_MAX,
    KP_MAX,
    MIT_MODELS,
    SET_ZERO,
    DamiaoRegister,
    DamiaoState,
    FrameError,
    MitCommand,
    MitReply,
    float_to_uint,
    frame_bits,
    mit_model,
    pack_command,
    pack_register_read,
    pack_register_reply,
    pack_reply,
    resolution,
    special_frame,
    uint_to_float,
    unpack_command,
    unpack_register_reply,
    unpack_reply,
)

SLACK = 1e-9
"""Float rounding on top of one step: a value one ulp below a range's end truncates a step down, as the firmware's does."""

models = st.sampled_from(sorted(MIT_MODELS))


def within(limit: float) -> st.SearchStrategy[float]:
    """Floats in [-limit, limit], the ends included (hypothesis tries them first)."""
    return st.floats(-limit, limit, allow_nan=False)


@st.composite
def commands(draw, name: str) -> MitCommand:
    model = MIT_MODELS[name]
    return MitCommand(
        position=draw(within(model.position_max)),
        velocity=draw(within(model.velocity_max)),
        kp=draw(st.floats(0.0, KP_MAX)),
        kd=draw(st.floats(0.0, KD_MAX)),
        torque=draw(within(model.torque_max)),
    )


@given(st.data(), models)
def test_a_command_round_trips_within_one_step_of_each_field(data, name):
    model = MIT_MODELS[name]
    command = data.draw(commands(name))
    frame = pack_command(model, command)
    assert len(frame) == 8
    assume(special_frame(frame) is None)  # the firmware reads FF×7 FC/FD/FE/FB as special, whatever it encodes
    decoded = unpack_command(model, frame)
    assert abs(decoded.position - command.position) <= SLACK + resolution(-model.position_max, model.position_max, 16)
    assert abs(decoded.velocity - command.velocity) <= SLACK + resolution(-model.velocity_max, model.velocity_max, 12)
    assert abs(decoded.kp - command.kp) <= SLACK + resolution(0.0, KP_MAX, 12)
    assert abs(decoded.kd - command.kd) <= SLACK + resolution(0.0, KD_MAX, 12)
    assert abs(decoded.torque - command.torque) <= SLACK + resolution(-model.torque_max, model.torque_max, 12)


@given(st.data(), models, st.integers(0, 15), st.sampled_from(list(DamiaoState)), st.integers(0, 255),
       st.integers(0, 255))
def test_a_reply_round_trips_with_its_id_state_and_temperatures(data, name, motor_id, state, mos, rotor):
    model = MIT_MODELS[name]
    reply = MitReply(motor_id=motor_id, position=data.draw(within(model.position_max)),
                     velocity=data.draw(within(model.velocity_max)),
                     torque=data.draw(within(model.torque_max)),
                     state=state, mos_temperature=mos, rotor_temperature=rotor)
    frame = pack_reply(model, reply)
    decoded = unpack_reply(model, frame)
    assert len(frame) == model.reply_bytes
    assert decoded.motor_id == motor_id
    assert abs(decoded.position - reply.position) <= SLACK + resolution(-model.position_max, model.position_max, 16)
    assert abs(decoded.velocity - reply.velocity) <= SLACK + resolution(-model.velocity_max, model.velocity_max, 12)
    assert abs(decoded.torque - reply.torque) <= SLACK + resolution(-model.torque_max, model.torque_max, 12)
    if model.reply == "damiao":
        assert (decoded.state, decoded.mos_temperature, decoded.rotor_temperature) == (state, mos, rotor)
    else:
        assert decoded.state == DamiaoState.ENABLED and decoded.mos_temperature is None


@given(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([12, 16]))
def test_values_outside_the_range_are_clamped_to_its_ends_as_the_firmware_does(x, bits):
    code = float_to_uint(x, -12.5, 12.5, bits)
    assert 0 <= code <= (1 << bits) - 1
    if x >= 12.5:
        assert code == (1 << bits) - 1
    if x <= -12.5:
        assert code == 0


def test_the_range_ends_map_to_the_first_and_last_codes_and_back_exactly():
    model = mit_model("AK80-6")
    assert float_to_uint(-12.5, -12.5, 12.5, 16) == 0 and float_to_uint(12.5, -12.5, 12.5, 16) == 0xFFFF
    assert uint_to_float(0, -22.5, 22.5, 12) == -22.5 and uint_to_float(0xFFF, -22.5, 22.5, 12) == 22.5
    frame = pack_command(model, MitCommand(position=-12.5, velocity=-22.5, kp=0.0, kd=0.0, torque=-12.0))
    assert frame == bytes(8)
    assert unpack_command(model, frame) == MitCommand(-12.5, -22.5, 0.0, 0.0, -12.0)


def test_the_model_table_holds_the_published_ranges():
    assert (MIT_MODELS["AK80-6"].position_max, MIT_MODELS["AK80-6"].velocity_max, MIT_MODELS["AK80-6"].torque_max) \
        == (12.5, 22.5, 12.0)
    assert (MIT_MODELS["DM-J4310"].position_max, MIT_MODELS["DM-J4310"].velocity_max,
            MIT_MODELS["DM-J4310"].torque_max) == (12.5, 30.0, 10.0)
    with pytest.raises(KeyError, match="unknown MIT motor model 'GO-M8010-6'"):
        mit_model("GO-M8010-6")


def test_special_frames_are_seven_ff_bytes_and_a_code():
    assert ENTER_MOTOR_MODE.hex() == "fffffffffffffffc"
    assert (special_frame(ENTER_MOTOR_MODE), special_frame(EXIT_MOTOR_MODE), special_frame(SET_ZERO)) == \
        ("enter", "exit", "zero")
    with pytest.raises(FrameError, match="special frame"):
        unpack_command(mit_model("AK80-6"), ENTER_MOTOR_MODE)


def test_a_reply_of_the_wrong_length_or_state_is_refused_naming_what_was_expected():
    with pytest.raises(FrameError, match=r"DM-J4310, damiao layout\): 6 data bytes \(expected 8\)"):
        unpack_reply(mit_model("DM-J4310"), bytes(6))
    with pytest.raises(FrameError, match="state nibble 0x7"):
        unpack_reply(mit_model("DM-J4310"), bytes([0x71, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(FrameError, match="7 data bytes"):
        unpack_command(mit_model("AK80-6"), bytes(7))


@given(st.integers(0, 0x7FF), st.binary(min_size=0, max_size=8))
def test_a_frame_takes_47_bits_plus_8_per_byte_plus_at_most_one_stuff_bit_per_4(arbitration_id, data):
    bits = frame_bits(arbitration_id, data)
    stuffed_part = 34 + 8 * len(data)  # SOF to the end of the CRC
    assert 47 + 8 * len(data) <= bits <= 47 + 8 * len(data) + (stuffed_part - 1) // 4


def test_an_alternating_frame_needs_no_stuff_bits_and_a_zero_frame_needs_many():
    assert frame_bits(0x555, bytes(0)) < frame_bits(0x000, bytes(0))
    assert frame_bits(0x001, bytes(8)) > 111


@given(st.integers(1, 0x7FF), st.sampled_from(list(DamiaoRegister)), st.floats(0.0, 1e4, width=32))
def test_a_damiao_register_read_round_trips(motor_id, register, value):
    request = pack_register_read(motor_id, register)
    assert request[2:4] == bytes((0x33, register)) and request[0] | request[1] << 8 == motor_id
    if register in (DamiaoRegister.MST_ID, DamiaoRegister.ESC_ID, DamiaoRegister.TIMEOUT, DamiaoRegister.CTRL_MODE):
        value = float(int(value))
    assert unpack_register_reply(pack_register_reply(motor_id, register, value), motor_id, register) == value
    with pytest.raises(FrameError, match="not motor"):
        unpack_register_reply(pack_register_reply(motor_id, register, value), motor_id + 1, register)


@given(st.floats(-3.14, 3.14), st.floats(-1.5, 1.5), st.floats(-3.14, 3.14),
       st.lists(st.floats(-34.0, 34.0), min_size=3, max_size=3))
def test_the_can_imus_angle_and_rate_frames_round_trip_within_one_step(roll, pitch, yaw, gyro):
    quat = imu_quat(np.array([roll, pitch, yaw]))
    reader = ImuReader()
    for data in pack_imu(quat, np.array(gyro)):
        assert len(data) == 8 and data[0] == 0x55
        reader.feed(data, 1.0)
    assert reader.samples == 1 and reader.stamp == 1.0
    angle_step, rate_step = np.pi / 32768, np.radians(2000) / 32768
    assert np.abs(reader.gyro - gyro).max() <= rate_step / 2 + 1e-9
    # the same rotation up to the quaternion's sign, within one angle step per axis
    assert 2 * np.arccos(min(1.0, abs(float(np.dot(reader.quat, quat))))) <= 3 * angle_step
    assert np.allclose(euler_from_quat(quat), [roll, pitch, yaw], atol=1e-6)


def test_an_imu_frame_of_another_layout_is_counted_as_malformed_and_no_sample_is_made():
    reader = ImuReader()
    reader.feed(bytes([0x55, 0x53, 0, 0, 0, 0, 0]), 1.0)   # 7 bytes
    reader.feed(bytes([0x55, 0x59, 0, 0, 0, 0, 0, 0]), 1.0)  # a quaternion packet would not fit: not ours
    reader.feed(bytes([0x55, 0x53, 0, 0, 0, 0, 0, 0]), 1.0)  # angles without their rate frame first
    assert reader.malformed == 2 and reader.samples == 0 and reader.quat is None
