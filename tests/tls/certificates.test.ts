/**
 * sockpit's own CA and server certificates (server/tls/certificates.ts; docs/security.md,
 * "Encrypted device connections"), checked with tools nobody here wrote: OpenSSL's command line and
 * Python's ssl module read and verify what @peculiar/x509 made.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CA_VALID_DAYS, createCa, fingerprint, issueServerCert, machineNames, SERVER_VALID_DAYS } from '../../server/tls/certificates';

const DAY_MS = 86_400_000;

function tmpFile(name: string, text: string): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-cert-')), name);
  fs.writeFileSync(file, text);
  return file;
}

const openssl = (args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('the own CA', () => {
  test('when the CA is made, then it is an ECDSA P-256 CA (basicConstraints CA:TRUE, pathlen 0; certificate and CRL signing only) valid for 20 years', async () => {
    const ca = await createCa();
    const cert = new crypto.X509Certificate(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails).toMatchObject({ namedCurve: 'prime256v1' });
    expect(cert.subject).toMatch(/CN=sockpit local CA/);
    expect(Date.parse(cert.validTo) - Date.now()).toBeGreaterThan((CA_VALID_DAYS - 1) * DAY_MS);
    const text = openssl(['x509', '-noout', '-text', '-in', tmpFile('ca.pem', ca.certPem)]);
    expect(text).toMatch(/CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    // Its key is PKCS#8 and matches the certificate.
    expect(cert.checkPrivateKey(crypto.createPrivateKey(ca.keyPem))).toBe(true);
  });

  test('when ca.pem is put in a bundle with `cat` (a trust store, a full chain), then OpenSSL and Python read every certificate in it', async () => {
    const ca = await createCa();
    const other = await createCa();
    // Each PEM ends with a newline, as files do; without one, "-----END CERTIFICATE----------BEGIN" breaks the bundle.
    expect(ca.certPem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
    expect(ca.keyPem.endsWith('-----END PRIVATE KEY-----\n')).toBe(true);
    const bundle = tmpFile('bundle.pem', ca.certPem + other.certPem);
    const subjects = openssl(['crl2pkcs7', '-nocrl', '-certfile', bundle]);
    expect(execFileSync('openssl', ['pkcs7', '-print_certs', '-noout'], { input: subjects, encoding: 'utf8' }).match(/subject=/g)).toHaveLength(2);
    const count = execFileSync('python3', ['-c', 'import ssl,sys; c=ssl.create_default_context(cafile=sys.argv[1]); print(len(c.get_ca_certs()))', bundle], { encoding: 'utf8' });
    expect(count.trim()).toBe('2');
  });

  test("fingerprint() is the SHA-256 fingerprint `openssl x509 -fingerprint -sha256` prints, in the same spelling", async () => {
    const ca = await createCa();
    const out = openssl(['x509', '-noout', '-fingerprint', '-sha256', '-in', tmpFile('ca.pem', ca.certPem)]);
    expect(out.trim()).toBe(`sha256 Fingerprint=${fingerprint(ca.certPem)}`);
    expect(fingerprint(ca.certPem)).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });
});

describe('server certificates', () => {
  test('when a server certificate is issued for host names and addresses, then OpenSSL verifies it against the CA for each of them (IPv4 also as a DNS entry) and for no other', async () => {
    const ca = await createCa();
    const names = ['sockpit.lan', 'localhost', '192.168.1.20', '127.0.0.1', 'fd00::7'];
    const server = await issueServerCert(ca, names);
    const caFile = tmpFile('ca.pem', ca.certPem);
    const certFile = tmpFile('server.pem', server.certPem);
    const verify = (extra: string[]) => {
      try {
        return openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', ...extra, certFile]).trim();
      } catch (err) {
        return String((err as { stderr?: string }).stderr ?? err);
      }
    };
    expect(verify([])).toMatch(/: OK$/);
    for (const host of ['sockpit.lan', 'localhost']) expect(verify(['-verify_hostname', host])).toMatch(/: OK$/);
    for (const ip of ['192.168.1.20', '127.0.0.1', 'fd00::7']) expect(verify(['-verify_ip', ip])).toMatch(/: OK$/);
    // mbedtls 2.x (Arduino-ESP32 2.x) compares host names only: the IPv4 addresses are DNS entries too.
    expect(verify(['-verify_hostname', '192.168.1.20'])).toMatch(/: OK$/);
    expect(verify(['-verify_hostname', 'other.lan'])).toMatch(/hostname mismatch/);
    expect(verify(['-verify_ip', '192.168.1.21'])).toMatch(/IP address mismatch/);
    const cert = new crypto.X509Certificate(server.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // serverAuth
    expect(cert.checkIssued(new crypto.X509Certificate(ca.certPem))).toBe(true);
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / DAY_MS)).toBe(SERVER_VALID_DAYS);
  });

  test('when a certificate is issued by another CA, then OpenSSL does not verify it against this one', async () => {
    const ca = await createCa();
    const stranger = await createCa();
    const server = await issueServerCert(stranger, ['localhost']);
    expect(() => openssl(['verify', '-CAfile', tmpFile('ca.pem', ca.certPem), tmpFile('s.pem', server.certPem)])).toThrow();
  });
});

describe('machineNames', () => {
  test('the names cover DEVICE_PUBLIC_HOST, the host name, localhost, every interface address (zone ids dropped), 127.0.0.1 and ::1, each once', () => {
    const interfaces = {
      lo: [{ address: '127.0.0.1', family: 'IPv4' }, { address: '::1', family: 'IPv6' }],
      eth0: [{ address: '192.168.1.20', family: 'IPv4' }, { address: 'fe80::1%eth0', family: 'IPv6' }],
    } as unknown as NodeJS.Dict<os.NetworkInterfaceInfo[]>;
    const names = machineNames('devices.example.net', interfaces, 'pi');
    expect(names[0]).toBe('devices.example.net');
    expect(names).toEqual(expect.arrayContaining(['pi', 'localhost', '127.0.0.1', '::1', '192.168.1.20', 'fe80::1']));
    expect(new Set(names).size).toBe(names.length);
    expect(machineNames(null, {}, '')).toEqual(['localhost', '127.0.0.1', '::1']);
  });
});
