/**
 * sockpit's own certificate authority and server certificates (docs/security.md, "Encrypted device
 * connections"), made with @peculiar/x509 on Node's WebCrypto: ECDSA P-256 keys, which ESP32's
 * mbedtls, Python's ssl and Mosquitto all accept.
 */
import 'reflect-metadata'; // @peculiar/x509's dependency injection needs it loaded first.
import crypto, { webcrypto } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** The CA outlives any device's firmware; a new CA means re-flashing every device that pins it. */
export const CA_VALID_DAYS = 20 * 365;
/** A server certificate's life; it is renewed well before it ends (see material.ts). */
export const SERVER_VALID_DAYS = 397;

export interface KeyPair {
  certPem: string;
  keyPem: string;
}

function serial(): string {
  // Positive, 16 bytes of randomness.
  const b = crypto.randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** PEM as files hold it: ending in a newline, so that `cat ca.pem other.pem > bundle.pem` makes a bundle others can read. */
function pemText(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

async function exportKey(key: CryptoKey): Promise<string> {
  return pemText(x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY'));
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decodeFirst(pem);
  return webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign']);
}

/** A new certificate authority for this installation. */
export async function createCa(now = new Date()): Promise<KeyPair> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=sockpit local CA (${os.hostname().slice(0, 40)}), O=sockpit`,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + CA_VALID_DAYS * DAY_MS),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: pemText(cert.toString('pem')), keyPem: await exportKey(keys.privateKey) };
}

/** A server certificate for `names` (host names and IP addresses), signed by `ca`. */
export async function issueServerCert(ca: KeyPair, names: readonly string[], now = new Date(), validDays = SERVER_VALID_DAYS): Promise<KeyPair> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  // An address is named twice: as an IP entry for every client that checks those, and as a DNS
  // entry for mbedtls 2.x (Arduino-ESP32 2.x), which only ever compares host names.
  const altNames = names.flatMap((n) =>
    net.isIPv4(n) ? [{ type: 'ip' as const, value: n }, { type: 'dns' as const, value: n }] : net.isIP(n) ? [{ type: 'ip' as const, value: n }] : [{ type: 'dns' as const, value: n }],
  );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${names[0] ?? 'sockpit'}, O=sockpit`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + validDays * DAY_MS),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: await importKey(ca.keyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(altNames),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { certPem: pemText(cert.toString('pem')), keyPem: await exportKey(keys.privateKey) };
}

/** The names devices may use for this machine: its host name, localhost, its addresses, and DEVICE_PUBLIC_HOST. */
export function machineNames(publicHost: string | null, interfaces = os.networkInterfaces(), hostname = os.hostname()): string[] {
  const names = new Set<string>();
  if (publicHost) names.add(publicHost);
  if (hostname) names.add(hostname);
  names.add('localhost');
  for (const list of Object.values(interfaces)) {
    for (const i of list ?? []) names.add(i.address.replace(/%.*$/, ''));
  }
  names.add('127.0.0.1');
  names.add('::1');
  return [...names].filter((n) => n.length > 0 && n.length <= 253);
}

/** The SHA-256 fingerprint of a certificate, as browsers and `openssl x509 -fingerprint -sha256` show it. */
export function fingerprint(certPem: string): string {
  return new crypto.X509Certificate(certPem).fingerprint256;
}
