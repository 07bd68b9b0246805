/**
 * `npx sockpit tls ca` (server/cli/index.ts; docs/security.md, "Encrypted device connections"): the
 * CA devices trust, as a maker copies it into config.h or hands it to mosquitto_pub --cafile.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tlsFiles } from '../../server/tls/material';
import { ensureBuilt } from '../support/child';
import { cli, killCliChildren, NO_STACK } from '../support/cli';
import { closeAllServers, startServer, TestServer } from '../support/server';
import { certificateFor, otherCa, presentedCertificate, writePair } from '../support/tls';

beforeAll(() => ensureBuilt()); // the CLI runs from dist/

afterEach(async () => {
  killCliChildren();
  await closeAllServers();
});

/** A DATA_DIR no server has used yet, as the CLI helpers want it. */
const freshData = (): TestServer => ({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-cli-tls-')) }) as TestServer;

describe('sockpit tls ca', () => {
  test("when it runs on the running server's data, then it prints exactly DATA_DIR/tls/ca.pem, whose SHA-256 is the fingerprint the server shows", async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    const r = await cli(server, ['tls', 'ca']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toBe(fs.readFileSync(tlsFiles(server.dataDir).caCert, 'utf8'));
    expect(r.stdout).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n$/);
    const openssl = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256'], { input: r.stdout, encoding: 'utf8' });
    expect(openssl.trim()).toBe(`sha256 Fingerprint=${server.app.tls!.ca!.sha256}`);
    // The output is the CA of the certificate the server presents.
    const subject = execFileSync('openssl', ['x509', '-noout', '-subject'], { input: r.stdout, encoding: 'utf8' });
    expect(subject).toMatch(/CN ?= ?sockpit local CA/);
  });

  test('when it runs before the server ever started, then it makes the CA (key 0600), and the server started later presents a certificate from that same CA', async () => {
    const data = freshData();
    const r = await cli(data, ['tls', 'ca']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const f = tlsFiles(data.dataDir);
    expect(fs.statSync(f.caKey).mode & 0o777).toBe(0o600);
    expect((await cli(data, ['tls', 'ca'])).stdout).toBe(r.stdout); // made once
    const server = await startServer({ dataDir: data.dataDir, deviceTlsPort: 0 });
    expect(server.app.tls!.ca!.pem).toBe(r.stdout);
    const presented = await presentedCertificate(server.tlsPorts.tcp);
    expect(presented.verify(new crypto.X509Certificate(r.stdout).publicKey)).toBe(true);
  });

  test('when TLS_CERT is set, then it says that devices need the CA that signed that certificate, exits 1 and prints no certificate', async () => {
    const files = writePair(await certificateFor(await otherCa(), ['localhost'], -1, 90));
    const data = freshData();
    const r = await cli(data, ['tls', 'ca'], { env: { TLS_CERT: files.cert, TLS_KEY: files.key } });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^sockpit: TLS_CERT is set \(.*cert\.pem\): .*the CA that signed it/);
    expect(r.stderr).not.toMatch(NO_STACK);
    expect(fs.existsSync(tlsFiles(data.dataDir).caKey)).toBe(false); // no CA made for nothing
  });

  test('when TLS_CERT is set without TLS_KEY, then it is a bad setting: exit 2, one line', async () => {
    const r = await cli(freshData(), ['tls', 'ca'], { env: { TLS_CERT: '/etc/hostname' } });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^sockpit: bad setting TLS_KEY: TLS_CERT and TLS_KEY go together/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  test('when the tls command is unknown, then it gets the usage and a non-zero exit, not a stack trace', async () => {
    const r = await cli(freshData(), ['tls', 'cert']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unknown tls command "cert"/);
    expect(r.stderr).not.toMatch(NO_STACK);
  });
});
