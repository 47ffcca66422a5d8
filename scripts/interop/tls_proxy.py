"""TLS in front of a plain presenced listener, for scripts/interop-synapse.sh
with INTEROP_PRESENCED_TLS=proxy: the reverse-proxy deployment (presenced
speaking plain HTTP behind a TLS terminator) instead of presenced's own
TLS listener. Standard library only.

Usage: tls_proxy.py LISTEN_PORT CERT KEY BACKEND_PORT
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    port, cert, key, backend = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handle(client_r, client_w):
        try:
            back_r, back_w = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, back_w), pipe(back_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
