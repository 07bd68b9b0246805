import type net from 'node:net';

/** A connection's remote address, without the IPv4-mapped prefix. */
export function remoteAddressOf(socket: net.Socket): string {
  return (socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
}

/** net.Server.listen as a promise of the bound port. */
export function listenOn(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}
