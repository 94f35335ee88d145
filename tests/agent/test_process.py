"""The reference Agent as its own process: Reboot() restarts it with state kept.

Also an independent-client interop check: Debian's mosquitto as the broker and
a paho-mqtt client publishing hand-built Records to the agent.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conformance.controller.controller import Controller
from conformance.mtp.mqtt.broker import MQTTBroker
from conformance.mtp.timeline import Timeline
from conformance.usp import messages, records
from tests.support.tools import mosquitto_broker

AGENT, CTRL = "os::012345-0001", "proto::controller-1"
STEP = 20.0


def _write_config(tmp_path, port: int) -> str:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "state_dir: state\n"
        "values:\n"
        f"  Device.MQTT.Client.1.BrokerPort: {port}\n"
        "  Device.MQTT.Client.1.Enable: true\n"
        "  Device.LocalAgent.MTP.1.Enable: true\n")
    return str(cfg)


def _start_agent(config: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "conformance.cli", "agent", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STEP)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STEP)
    return proc.returncode


def test_reboot_restarts_the_process_with_state_kept(tmp_path):
    async def main():
        tl = Timeline()
        async with await MQTTBroker(timeline=tl).start() as broker:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, "usp/controller"), agent_id=AGENT)
            proc = _start_agent(_write_config(tmp_path, broker.port))
            try:
                first = await ctrl.connect_record("mqtt_connect")
                add = await ctrl.request(messages.request("add", {"create_objs": [{
                    "obj_path": "Device.LocalAgent.Subscription.",
                    "param_settings": [
                        {"param": "ID", "value": "boot"}, {"param": "Enable", "value": True},
                        {"param": "NotifType", "value": "Event"},
                        {"param": "Persistent", "value": True},
                        {"param": "ReferenceList", "value": "Device.Boot!"}]}]}))
                assert add.body.response.add_resp.created_obj_results[0].oper_status \
                    .HasField("oper_success")
                mark = ctrl.mark
                await ctrl.request(messages.request("operate", {
                    "command": "Device.Reboot()", "command_key": "rb-1", "send_resp": True}))
                # R-MTP.7 DisconnectRecord, then a new MTP session (R-MTP.6) from the same
                # process (re-executed), then Boot! with the cause and command key.
                await ctrl.wait_for(lambda r: r.record is not None and
                                    r.record.WhichOneof("record_type") == "disconnect",
                                    what="DisconnectRecord", since=mark)
                await ctrl.connect_record("mqtt_connect", since=mark + 1)
                boot = await ctrl.notification(
                    lambda m: m.body.request.notify.event.event_name == "Boot!", since=mark)
                args = dict(boot.msg.body.request.notify.event.params)
                assert args["Cause"] == "RemoteReboot" and args["CommandKey"] == "rb-1"
                assert proc.poll() is None  # the same process, re-executed
                got = await ctrl.request(messages.request("get", {"param_paths": [
                    'Device.LocalAgent.Subscription.[ID=="boot"].Persistent']}))
                results = got.body.response.get_resp.req_path_results[0].resolved_path_results
                assert [dict(r.result_params) for r in results] == [{"Persistent": "true"}]
                assert first.record.from_id == AGENT
            finally:
                rc = await asyncio.to_thread(_stop, proc)
                output = proc.stdout.read() if proc.stdout else ""
                await ctrl.close()
            assert rc == 0, output
            assert output.count("reference agent os::012345-0001 running") == 2, output
            assert "Traceback" not in output, output
    asyncio.run(main())


def test_bad_config_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("state_dir: s\nfaults: [no.such.fault]\n")
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "agent", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown fault(s) no.such.fault" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "agent", "--config", str(cfg),
                           "--fault", "nope"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_paho_client_through_mosquitto_gets_correct_responses(tmp_path):
    """Independent stack: Debian's mosquitto broker + a paho client, no suite code on the wire."""
    with mosquitto_broker(tmp_path) as port:
        proc = _start_agent(_write_config(tmp_path, port))
        got = threading.Event()
        answers: list[bytes] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ctrl",
                             protocol=mqtt.MQTTv5)

        def on_message(c, userdata, message):
            answers.append(message.payload)
            got.set()

        subscribed = threading.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *a: subscribed.set()
        try:
            client.connect("127.0.0.1", port)
            client.loop_start()
            client.subscribe("usp/controller", qos=1)
            assert subscribed.wait(STEP)
            # The agent's connect Record arrives first (interop notes).
            assert got.wait(STEP), "no MQTTConnect Record from the agent"
            hello = records.parse_record(answers.pop(0))
            assert hello.WhichOneof("record_type") == "mqtt_connect"
            got.clear()
            request = records.no_session_record(
                messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                                 msg_id="paho-1"), to_id=AGENT, from_id=CTRL)
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "usp/controller"
            props.ContentType = "usp.msg"
            client.publish(hello.mqtt_connect.subscribed_topic, records.serialize(request), qos=1,
                           properties=props)
            assert got.wait(STEP), "no answer to the Get"
            reply = records.unwrap_msg(records.parse_record(answers.pop(0)))
            assert reply.header.msg_id == "paho-1"
            res = reply.body.response.get_resp.req_path_results[0].resolved_path_results[0]
            assert res.result_params["EndpointID"] == AGENT
        finally:
            client.disconnect()
            client.loop_stop()
            assert _stop(proc) == 0
