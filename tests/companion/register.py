"""Registers an account with Synapse's shared-secret registration
(`/_synapse/admin/v1/register`) at BASE and prints its access token.

Usage: register.py BASE LOCALPART admin|user SECRET
BASE may be Synapse itself or presenced in front of it (which forwards).
"""

import hashlib
import hmac
import json
import sys
import urllib.request

base, user, kind, secret = sys.argv[1:5]
admin = kind == "admin"
url = base + "/_synapse/admin/v1/register"
nonce = json.load(urllib.request.urlopen(url))["nonce"]
mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
mac.update(b"\x00".join(p.encode() for p in (nonce, user, "password", "admin" if admin else "notadmin")))
body = {"nonce": nonce, "username": user, "password": "password", "admin": admin, "mac": mac.hexdigest()}
req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                             headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req))["access_token"])
