/**
 * TLS clients and certificates for tests (docs/security.md, "Encrypted device connections"): a line
 * device over node:tls, the refusal a client that does not trust the server gets, the certificate a
 * port presents, HTTPS requests with a CA, and certificates made to order (another CA, expired, not
 * yet valid) with the same library the server uses.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { decodeLine, encodeLine, LineSplitter } from '../../server/devices/codec';
import { createCa, issueServerCert, KeyPair } from '../../server/tls/certificates';
import { Enc, Inbox } from './device';

export type { KeyPair };

export interface TlsClientOptions {
  /** The CA the client trusts (PEM); unset: Node's bundled public CAs, as a client that was never given sockpit's. */
  ca?: string;
  /** Where to connect (default 127.0.0.1). */
  host?: string;
  /** The name the client asks for (SNI) and checks the certificate against; default: `host`. */
  servername?: string;
  localAddress?: string;
  /** A client certificate and key, which the server never asks for. */
  cert?: string;
  key?: string;
}

function connectOptions(port: number, o: TlsClientOptions): tls.ConnectionOptions {
  const host = o.host ?? '127.0.0.1';
  const servername = o.servername ?? host;
  return {
    host,
    port,
    ...(o.ca === undefined ? {} : { ca: o.ca }),
    // SNI carries host names only; with an IP the client still checks the certificate against it.
    ...(net.isIP(servername) ? { checkServerIdentity: (_: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(servername, cert) } : { servername }),
    ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    ...(o.cert ? { cert: o.cert, key: o.key } : {}),
    rejectUnauthorized: true,
  };
}

/** Opens a TLS connection that verifies the server; resolves once the handshake is through. */
export function tlsConnect(port: number, o: TlsClientOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(connectOptions(port, o));
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

/** The error with which a verifying client refuses the server (it must refuse). */
export async function tlsRefusal(port: number, o: TlsClientOptions = {}): Promise<NodeJS.ErrnoException> {
  let socket: tls.TLSSocket;
  try {
    socket = await tlsConnect(port, o);
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  socket.destroy();
  throw new Error(`the TLS client on port ${port} accepted the server (${JSON.stringify(o.servername ?? o.host ?? '127.0.0.1')})`);
}

/** The certificate a TLS port presents now, read without verifying it. */
export function presentedCertificate(port: number, host = '127.0.0.1'): Promise<crypto.X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.destroy();
      if (cert) resolve(cert);
      else reject(new Error('no peer certificate'));
    });
    socket.once('error', reject);
  });
}

/** A device speaking the line protocol (docs/protocol.md) over TLS, as the firmware does with SERVER_CA. */
export class TlsDevice extends Inbox {
  closed = false;
  /** The server certificate this connection got in its handshake. */
  readonly certificate: crypto.X509Certificate;
  private readonly splitter = new LineSplitter(64 * 1024);
  private closeWaiters: (() => void)[] = [];

  private constructor(readonly socket: tls.TLSSocket) {
    super();
    this.certificate = socket.getPeerX509Certificate()!;
    socket.on('data', (chunk: Buffer) =>
      this.splitter.push(chunk, (line) => {
        const d = decodeLine(line);
        if (d.ok) this.push(d.message);
      }),
    );
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters) w();
    });
  }

  static async connect(port: number, o: TlsClientOptions = {}): Promise<TlsDevice> {
    return new TlsDevice(await tlsConnect(port, o));
  }

  /** Connects, says hello and waits for the welcome. */
  static async hello(port: number, o: TlsClientOptions, device: string, token: string): Promise<TlsDevice> {
    const d = await TlsDevice.connect(port, o);
    d.send({ type: 'hello', device, token, firmware: 'test-tls/1' });
    await d.next((m) => m.type === 'welcome');
    return d;
  }

  send(msg: unknown, enc: Enc = 'base64'): void {
    this.socket.write(encodeLine(msg as object, enc));
  }

  /** A ping answered by a pong: the connection works. */
  async roundTrip(timeoutMs = 5000): Promise<void> {
    this.send({ type: 'ping' });
    await this.next((m) => m.type === 'pong', timeoutMs);
  }

  waitClosed(timeoutMs = 8000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('connection still open')), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface HttpsResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** An HTTPS request that trusts `ca` only (fetch cannot be given a CA). */
export function httpsRequest(url: string, o: { ca: string; method?: string; headers?: Record<string, string>; body?: string }): Promise<HttpsResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: o.method ?? 'GET', ca: o.ca, headers: { ...(o.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(o.body)) }), ...o.headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** A CA other than the server's (a client that trusts it does not trust the server). */
export function otherCa(): Promise<KeyPair> {
  return createCa();
}

/**
 * A server certificate for `names` from `ca`, valid from `fromDays` to `toDays` days from now
 * (negative: in the past), to stand in for TLS_CERT.
 */
export async function certificateFor(ca: KeyPair, names: string[], fromDays: number, toDays: number): Promise<KeyPair> {
  // issueServerCert starts a certificate one day before `now` and ends it `validDays` after it.
  const now = new Date(Date.now() + (fromDays + 1) * 86_400_000);
  return issueServerCert(ca, names, now, toDays - fromDays - 1);
}

/** Writes TLS_CERT and TLS_KEY files (key 0600) into a new directory; returns their paths. */
export function writePair(pair: KeyPair, dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-tls-'))): { cert: string; key: string; dir: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  fs.writeFileSync(cert, pair.certPem);
  fs.writeFileSync(key, pair.keyPem, { mode: 0o600 });
  return { cert, key, dir };
}

/** The SHA-256 fingerprint of a PEM certificate, as the page and `openssl x509 -fingerprint -sha256` show it. */
export function sha256Of(pem: string): string {
  return new crypto.X509Certificate(pem).fingerprint256;
}
