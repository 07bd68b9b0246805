"""An MQTT device on Debian's python3-paho-mqtt, for tests/devices/transports/mqtt.test.ts.

Environment: PORT, DEVICE, TOKEN. Prints one line per event: `connack RC`, `suback QOS…`,
`puback MID`, `command JSON`, `disconnected RC`. After a good CONNACK it subscribes to its commands
topic and publishes a reliable reading with QoS 1; it acks every command on its ack topic.
"""
import json
import os

import paho.mqtt.client as mqtt

PORT = int(os.environ["PORT"])
DEVICE = os.environ["DEVICE"]
TOKEN = os.environ.get("TOKEN")

try:  # paho-mqtt 2 asks which callback signatures to use; Debian bookworm ships 1.6.1
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id="paho-" + DEVICE, protocol=mqtt.MQTTv311)
except AttributeError:
    client = mqtt.Client(client_id="paho-" + DEVICE, protocol=mqtt.MQTTv311)
client.username_pw_set(DEVICE, TOKEN)


def on_connect(c, userdata, flags, rc):
    print("connack", rc)
    if rc != 0:
        c.disconnect()
        return
    c.subscribe("sockpit/%s/commands" % DEVICE, qos=1)
    info = c.publish("sockpit/%s/telemetry" % DEVICE, json.dumps({"type": "telemetry", "id": "paho-1", "data": {"t": 19.5}}), qos=1)
    print("published", info.mid)


def on_subscribe(c, userdata, mid, granted):
    print("suback", *granted)


def on_publish(c, userdata, mid):
    print("puback", mid)


def on_message(c, userdata, msg):
    command = json.loads(msg.payload)
    print("command", msg.qos, json.dumps(command, separators=(",", ":")))
    c.publish("sockpit/%s/ack" % DEVICE, json.dumps({"id": command["id"], "ok": True, "result": {"by": "paho"}}), qos=1)


def on_disconnect(c, userdata, rc):
    print("disconnected", rc)
    c.disconnect()


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_publish = on_publish
client.on_message = on_message
client.on_disconnect = on_disconnect
client.connect("127.0.0.1", PORT, keepalive=30)
client.loop_forever()
