"""A WebSocket device on Debian's python3-websockets, for tests/devices/transports/websocket.test.ts.

Environment: URL (ws://HOST:PORT/device?...), MODE (`bearer`: the token in an Authorization header;
`hello`: a base64 hello as the first message), DEVICE, TOKEN. Prints one line per event:
`refused STATUS`, `recv JSON` for each message (decoded), `closed CODE`. Sends a reliable reading
after the welcome and acks every command.
"""
import asyncio
import base64
import json
import os

import websockets

URL = os.environ["URL"]
MODE = os.environ.get("MODE", "bearer")
DEVICE = os.environ.get("DEVICE", "")
TOKEN = os.environ.get("TOKEN", "")
MAJOR = int(websockets.__version__.split(".")[0])


def decode(frame):
    return json.loads(frame if frame.startswith("{") else base64.b64decode(frame).decode("utf-8"))


def encode(msg, b64):
    text = json.dumps(msg, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii") if b64 else text


async def main():
    headers = {"Authorization": "Bearer " + TOKEN} if MODE == "bearer" else {}
    # websockets 14 renamed the argument (its new client); Debian bookworm ships 10.4.
    kw = {"additional_headers": headers} if MAJOR >= 14 else {"extra_headers": headers}
    b64 = MODE == "hello"
    try:
        ws = await websockets.connect(URL, **kw)
    except Exception as e:
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        print("refused", status)
        return
    if MODE == "hello":
        await ws.send(encode({"type": "hello", "device": DEVICE, "token": TOKEN, "firmware": "python"}, True))
    try:
        async for frame in ws:
            print("frame", "json" if frame.startswith("{") else "base64")
            msg = decode(frame)
            print("recv", json.dumps(msg, separators=(",", ":")))
            if msg.get("type") == "welcome":
                await ws.send(encode({"type": "telemetry", "id": "py-1", "data": {"t": 20.5}}, b64))
            elif msg.get("type") == "fromservertonode":
                await ws.send(encode({"type": "ack", "id": msg["id"], "ok": True, "result": {"by": "python"}}, b64))
    except websockets.ConnectionClosed:
        pass
    print("closed", ws.close_code)


asyncio.run(main())
