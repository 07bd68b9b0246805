import asyncio
import websockets
import json

#Στέλνουμε τις τιμές ενός Αισθητήρα ή κάτι άλλο
#περιοδικά ή όποτε θέλουμε εμείς καλώντας αυτήν την συνάρτηση
async def getMeasurementAndSendToServer(websocket):

    #Εδώ θα μπορούσε να μετράει απο τον ADC ή από κάποιον αισθητήρα
    print("Send measurements to Server")
    event = { }
    event["type"] = "node"
    event["msg"] = "values"
    await websocket.send(json.dumps(event))

async def handlerNode():
    async with websockets.connect("ws://localhost:3000/device?device=thesis-node") as websocket:
        while True:
            message = await websocket.recv()
            #Παίρνω μηνύματα από τον Server

            event = json.loads(message)
            if event["type"] != None:
                if event["type"] == "fromservertonode":
                    if event["msg"] == "action":
                        if event["action"] == "togglerele":
                            #Εκτελούμε μια ενέργεια, όπως ενεργοποίηση ενός pin
                            #για on ή off μιας συσκευής μέσω ρελέ, όπως ανεμιστήρα ή λάμπα
                            print("Toggle a Rele")

                            #Θα μπορούσαμε να στείλουμε
                            await getMeasurementAndSendToServer(websocket)

                        if event["action"] == "changesetting":
                            #Να αλλάξει μια ρύθμιση στον Client (πχ Raspberry,esp32 κτλ)
                            print("changesetting")

asyncio.run(handlerNode())
