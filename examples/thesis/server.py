import asyncio
import itertools
import json

import websockets

connected = []

async def handler(websocket):

    print(websocket)
    connected.append(websocket)

    async for message in websocket:
        print("get message")
        #Παίρνω μηνύματα από τους Κόμβους-nodes-sensors
        event = json.loads(message)

        if event["type"] != None:
            if event["type"] == "node":
                print("get message from node")
                #Αποθηκεύω το μήνυμα απο τον κόμβο-node
                msg = event["msg"]
                #Ελέγγω ...

                #Αποθηκεύω στη βάση

                #Στέλνω socket μήνυμα στην ιστοσελίδα για ενημέρωση
                event["type"]="fromservertowebpage"
                event["msg"]="times ktl"
                await websocket.send(json.dumps(event))

            if event["type"] == "webpage":
                print("get message from webpage")

                #Αποθηκεύω το μήνυμα απο την Ιστοσελίδα
                msg = event["msg"]

                #Στέλνω socket μήνυμα στον κόμβο από την ιστοσελίδα
                event["type"]="fromservertonode"
                event["msg"]="action"
                event["action"]="togglerele"
                #await websocket.send(json.dumps(event))
                for connection in connected:
                    #print(connection)
                    try:
                        await connection.send(json.dumps(event))
                    except websockets.ConnectionClosed as exc:
                        connected.remove(connection)
                    print("and send message to node")

async def main():
    async with websockets.serve(handler, "", 8001):
        await asyncio.Future() # run forever

if __name__ == "__main__":

    asyncio.run(main())
