"""The Feetech STS codec: packets, checksums and register values round-trip at the limits of their ranges,
and the bytes are those Feetech's own SDK (scservo_sdk) writes and accepts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2r.hardware.drivers.feetech_protocol import (
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketParser,
    ProtocolError,
    Register,
    checksum,
    decode_packet,
    decode_value,
    encode_packet,
    encode_value,
    parse_sync_write,
    read_packet,
    register_bytes,
    register_value,
    status_packet,
    sync_read_packet,
    sync_write_packet,
)

ids = st.integers(0, 0xFD)


def test_a_ping_of_servo_1_is_the_manuals_example_bytes():
    # Feetech's STS manual: ping of id 1 is FF FF 01 02 01 FB.
    assert encode_packet(1, Instruction.PING) == bytes.fromhex("ff ff 01 02 01 fb")
    # Read 2 bytes of present position (56) from id 1: FF FF 01 04 02 38 02 BE.
    assert read_packet(1, Register.PRESENT_POSITION, 2) == bytes.fromhex("ff ff 01 04 02 38 02 be")


@given(motor_id=st.integers(0, BROADCAST_ID), code=st.integers(0, 255), params=st.binary(max_size=244))
def test_any_packet_round_trips_and_its_checksum_is_the_inverted_sum(motor_id, code, params):
    data = encode_packet(motor_id, code, params)
    assert decode_packet(data) == Packet(motor_id, code, params)
    assert (sum(data[2:]) & 0xFF) == 0xFF, "id + length + code + params + checksum sums to 0xFF"


@given(value=st.integers(-(2**15) + 1, 2**15 - 1))
def test_speeds_round_trip_as_sign_magnitude_over_bit_15(value):
    data = register_bytes(Register.PRESENT_SPEED, value)
    assert len(data) == 2 and register_value(Register.PRESENT_SPEED, data) == value
    if value < 0:
        assert data[1] & 0x80, "the sign is bit 15"


@pytest.mark.parametrize("register, lowest, highest", [(Register.HOMING_OFFSET, -2047, 2047),
                                                       (Register.PRESENT_LOAD, -1023, 1023),
                                                       (Register.GOAL_POSITION, 0, 65535),
                                                       (Register.TORQUE_ENABLE, 0, 255)])
def test_register_values_round_trip_at_their_limits_and_refuse_one_past(register, lowest, highest):
    for value in (lowest, highest, 0):
        assert register_value(register, register_bytes(register, value)) == value
    with pytest.raises(ProtocolError):
        register_bytes(register, highest + 1)
    with pytest.raises(ProtocolError):
        register_bytes(register, lowest - 1)


@given(value=st.integers(0, 4095))
def test_positions_are_plain_little_endian(value):
    assert encode_value(value, 2) == bytes((value & 0xFF, value >> 8))
    assert decode_value(encode_value(value, 2)) == value


@given(entries=st.dictionaries(ids, st.binary(min_size=2, max_size=2), min_size=1, max_size=20))
def test_a_sync_write_parses_back_into_its_entries(entries):
    packet = decode_packet(sync_write_packet(Register.GOAL_POSITION, 2, entries))
    assert packet.id == BROADCAST_ID and packet.code == Instruction.SYNC_WRITE
    assert parse_sync_write(packet.params) == (Register.GOAL_POSITION, 2, entries)


@given(chunks=st.lists(st.integers(1, 7), min_size=1, max_size=40))
def test_the_parser_finds_every_status_packet_however_the_stream_is_cut(chunks):
    packets = [status_packet(i, i % 3, bytes((i, 0xFF, 0xFF, i))) for i in range(1, 7)]
    stream = b"\x00\xff" + b"".join(packets)
    parser = PacketParser()
    found, at = [], 0
    for size in chunks * 10:
        found += parser.feed(stream[at:at + size])
        at += size
    found += parser.feed(stream[at:])
    assert [p.id for p in found] == [1, 2, 3, 4, 5, 6]
    assert found[3] == Packet(4, 1, bytes((4, 0xFF, 0xFF, 4)))


def test_a_corrupted_packet_is_dropped_and_counted_and_the_next_one_still_parses():
    bad = bytearray(status_packet(2, 0, b"\x10\x20"))
    bad[-2] ^= 0x01  # one bit flipped in the parameters
    parser = PacketParser()
    found = parser.feed(bytes(bad) + status_packet(3, 0, b"\x30\x40"))
    assert found == [Packet(3, 0, b"\x30\x40")]
    assert parser.corrupt == 1
    with pytest.raises(ProtocolError, match="checksum"):
        decode_packet(bytes(bad))


def test_out_of_range_ids_and_oversized_packets_are_refused():
    with pytest.raises(ProtocolError, match="id"):
        encode_packet(0xFF, Instruction.PING)
    with pytest.raises(ProtocolError, match="params"):
        encode_packet(1, Instruction.WRITE, bytes(300))
    with pytest.raises(ProtocolError, match="expected 2"):
        sync_write_packet(Register.GOAL_POSITION, 2, {1: b"\x00"})


def test_the_vendor_sdk_writes_the_same_sync_read_and_sync_write_bytes():
    scservo_sdk = pytest.importorskip("scservo_sdk")

    class Capture:  # the SDK's port handler, recording what it would put on the wire
        is_using = False
        written = b""

        def clearPort(self):  # noqa: N802 (the SDK's names)
            pass

        def writePort(self, packet):  # noqa: N802
            self.written = bytes(packet)
            return len(packet)

    port = Capture()
    handler = scservo_sdk.protocol_packet_handler(port, 0)
    reader = scservo_sdk.GroupSyncRead(handler, Register.PRESENT_POSITION, 8)
    for motor_id in (1, 2, 3, 4, 5, 6):
        reader.addParam(motor_id)
    reader.txPacket()
    assert port.written == sync_read_packet(Register.PRESENT_POSITION, 8, [1, 2, 3, 4, 5, 6])
    port.is_using = False
    writer = scservo_sdk.GroupSyncWrite(handler, Register.GOAL_POSITION, 2)
    goals = {1: 2048, 2: 0, 3: 4095}
    for motor_id, goal in goals.items():
        writer.addParam(motor_id, list(encode_value(goal, 2)))
    writer.txPacket()  # a broadcast: the SDK writes and waits for no answer
    assert port.written == sync_write_packet(Register.GOAL_POSITION, 2,
                                             {i: encode_value(g, 2) for i, g in goals.items()})
    assert checksum(port.written[2:-1]) == port.written[-1]
