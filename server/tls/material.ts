import { EventEmitter } from 'node:events';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { createCa, fingerprint, issueServerCert, KeyPair, machineNames } from './certificates';

const DAY_MS = 86_400_000;
/** How long a TLS handshake may take; a client that never finishes it is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** A TLS setting that cannot be used; start-up stops with this one line. */
export class TlsSetupError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
    this.name = 'TlsSetupError';
  }
}

export interface TlsMaterialOptions {
  dataDir: string;
  /** TLS_CERT / TLS_KEY: a certificate the person gives; null to use sockpit's own CA. */
  certFile: string | null;
  keyFile: string | null;
  /** DEVICE_PUBLIC_HOST: one more name the own server certificate covers. */
  publicHost: string | null;
  log: Logger;
  /** The own server certificate is renewed when fewer days than this remain (default 30). */
  renewBeforeDays?: number;
  /** How often the own certificate is checked for renewal (default 12 h). */
  checkEveryMs?: number;
  /** Names the own server certificate must cover (default: this machine's, machineNames()). */
  names?: () => string[];
}

/** The own CA, for the page's firmware snippet and `sockpit tls ca`. */
export interface CaInfo {
  pem: string;
  sha256: string;
}

/**
 * Where the own CA and server certificate live: DATA_DIR/tls/ (keys mode 0600). The server
 * certificate is named after this machine, so instances that share the directory (and so the CA)
 * each keep their own (docs/deploying.md).
 */
export function tlsFiles(dataDir: string, host = os.hostname()) {
  const dir = path.join(dataDir, 'tls');
  const me = host.replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 64) || 'server';
  return {
    dir,
    caCert: path.join(dir, 'ca.pem'),
    caKey: path.join(dir, 'ca-key.pem'),
    cert: path.join(dir, `server-${me}.pem`),
    key: path.join(dir, `server-${me}-key.pem`),
  };
}

function readIfThere(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function writeSecret(file: string, data: string): void {
  // Written aside and renamed, so a reader never sees half a key.
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

/**
 * The own CA of this DATA_DIR, made on first use (the CLI's `tls ca` and the server share it).
 * Instances that share the directory and start together agree on one CA: the first to link its
 * key into place wins, and the others read the winner's.
 */
export async function loadOrCreateCa(dataDir: string): Promise<KeyPair> {
  const f = tlsFiles(dataDir);
  fs.mkdirSync(f.dir, { recursive: true, mode: 0o700 });
  const existing = await readCa(f);
  if (existing) return existing;
  const ca = await createCa();
  const tmpKey = `${f.caKey}.${process.pid}.tmp`;
  const tmpCert = `${f.caCert}.${process.pid}.tmp`;
  fs.writeFileSync(tmpKey, ca.keyPem, { mode: 0o600 });
  fs.writeFileSync(tmpCert, ca.certPem, { mode: 0o644 });
  try {
    fs.linkSync(tmpKey, f.caKey);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Another instance made one first: use it.
    const theirs = await readCa(f, 5000);
    if (!theirs) throw new TlsSetupError('DATA_DIR', `${f.caKey} appeared without ${f.caCert}; remove both to make a new CA`);
    return theirs;
  } finally {
    fs.rmSync(tmpKey, { force: true });
  }
  fs.renameSync(tmpCert, f.caCert);
  return ca;
}

/** The CA on disk, or null when there is none; waits up to `waitMs` for a certificate whose key is already there. */
async function readCa(f: ReturnType<typeof tlsFiles>, waitMs = 2000): Promise<KeyPair | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const keyPem = readIfThere(f.caKey);
    const certPem = readIfThere(f.caCert);
    if (certPem && keyPem) return { certPem, keyPem };
    if (!keyPem && !certPem) return null;
    if (certPem && !keyPem) throw new TlsSetupError('DATA_DIR', `${f.caKey} is missing beside ${f.caCert}; restore it, or remove both to make a new CA`);
    // The key is in place and its certificate is on its way (another instance is making the CA).
    if (Date.now() > deadline) throw new TlsSetupError('DATA_DIR', `${f.caCert} is missing beside ${f.caKey}; restore it, or remove both to make a new CA`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One spelling per name: IPv6 addresses compressed and lower-case (Node writes them out in full), host names lower-case. */
function canonicalName(name: string): string {
  return net.isIPv6(name) ? new URL(`http://[${name}]`).hostname.slice(1, -1) : name.toLowerCase();
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : (e.message ?? String(err));
}

/**
 * The certificate and key the TLS listeners present. Either the files of TLS_CERT/TLS_KEY, read
 * again on reload() (SIGHUP) and when they change; or sockpit's own CA and a server certificate for
 * this machine's names, renewed well before it ends. `changed` tells the listeners to take the new
 * context; connections already open keep theirs.
 */
export class TlsMaterial extends EventEmitter<{ changed: [] }> {
  private pair: KeyPair;
  /**
   * The own CA as it was at start. Renewals sign with it, so a certificate is never served from a CA
   * the page and the devices do not know (were DATA_DIR/tls/ gone, a new one would be made there).
   */
  private ownCa: KeyPair | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private reloading: Promise<void> | null = null;

  private constructor(
    private readonly opts: TlsMaterialOptions,
    pair: KeyPair,
    /** The own CA; null when TLS_CERT is given (its CA is whoever signed it). */
    readonly ca: CaInfo | null,
  ) {
    super();
    this.pair = pair;
  }

  /** Loads or makes the certificate; throws TlsSetupError with one clear line when it cannot. */
  static async open(opts: TlsMaterialOptions): Promise<TlsMaterial> {
    if (opts.certFile && opts.keyFile) {
      const material = new TlsMaterial(opts, TlsMaterial.readGiven(opts), null);
      material.watchGiven();
      return material;
    }
    const ca = await loadOrCreateCa(opts.dataDir);
    const material = new TlsMaterial(opts, await TlsMaterial.ownServerCert(opts, ca), { pem: ca.certPem, sha256: fingerprint(ca.certPem) });
    material.ownCa = ca;
    const every = opts.checkEveryMs ?? 12 * 3_600_000;
    const t = setInterval(() => void material.reload(), every);
    t.unref();
    material.timers.push(t);
    return material;
  }

  /** Options for tls.createServer and setSecureContext. */
  secureContext(): tls.SecureContextOptions {
    return { cert: this.pair.certPem, key: this.pair.keyPem, minVersion: 'TLSv1.2' };
  }

  /** Options of a TLS server: this context, no client certificates asked for, a bounded handshake. */
  serverOptions(): tls.TlsOptions {
    return { ...this.secureContext(), requestCert: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS };
  }

  /** The certificate presented now (PEM). */
  get certificate(): string {
    return this.pair.certPem;
  }

  /**
   * Reads TLS_CERT/TLS_KEY again, or renews the own server certificate if it is due (or the
   * machine's names changed). On a failure the current certificate stays and the reason is logged.
   */
  reload(): Promise<void> {
    this.reloading ??= this.doReload().finally(() => {
      this.reloading = null;
    });
    return this.reloading;
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    if (this.opts.certFile) fs.unwatchFile(this.opts.certFile);
    if (this.opts.keyFile) fs.unwatchFile(this.opts.keyFile);
  }

  private async doReload(): Promise<void> {
    const { log } = this.opts;
    try {
      let next: KeyPair;
      if (this.opts.certFile) next = TlsMaterial.readGiven(this.opts);
      else next = await TlsMaterial.ownServerCert(this.opts, this.ownCa!);
      if (next.certPem === this.pair.certPem && next.keyPem === this.pair.keyPem) return;
      this.pair = next;
      log.info({ notAfter: new crypto.X509Certificate(next.certPem).validTo }, 'TLS certificate loaded; new connections get it, open ones keep theirs');
      this.emit('changed');
    } catch (err) {
      log.error({ err: err instanceof TlsSetupError ? err.message : err }, 'could not load the new TLS certificate; keeping the current one');
    }
  }

  private watchGiven(): void {
    let timer: NodeJS.Timeout | null = null;
    const changed = () => {
      // Both files usually change together: one reload after the last of them.
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => void this.reload(), 500);
      timer.unref();
    };
    for (const file of [this.opts.certFile!, this.opts.keyFile!]) {
      fs.watchFile(file, { interval: 2000, persistent: false }, changed);
    }
  }

  private static readGiven(opts: TlsMaterialOptions): KeyPair {
    let certPem: string;
    let keyPem: string;
    try {
      certPem = fs.readFileSync(opts.certFile!, 'utf8');
    } catch (err) {
      throw new TlsSetupError('TLS_CERT', `cannot read ${opts.certFile}: ${describe(err)}`);
    }
    try {
      keyPem = fs.readFileSync(opts.keyFile!, 'utf8');
    } catch (err) {
      throw new TlsSetupError('TLS_KEY', `cannot read ${opts.keyFile}: ${describe(err)}`);
    }
    let cert: crypto.X509Certificate;
    try {
      cert = new crypto.X509Certificate(certPem);
    } catch {
      throw new TlsSetupError('TLS_CERT', `${opts.certFile} is not a PEM certificate`);
    }
    try {
      tls.createSecureContext({ cert: certPem, key: keyPem });
    } catch (err) {
      throw new TlsSetupError('TLS_KEY', `${opts.keyFile} is not the private key of TLS_CERT (${(err as Error).message})`);
    }
    const now = Date.now();
    // Served anyway (the process keeps running), but said plainly: devices will refuse it.
    if (Date.parse(cert.validTo) < now) opts.log.warn({ file: opts.certFile, validTo: cert.validTo }, 'TLS_CERT has expired: devices will refuse it until it is replaced');
    else if (Date.parse(cert.validFrom) > now) opts.log.warn({ file: opts.certFile, validFrom: cert.validFrom }, 'TLS_CERT is not valid yet: devices will refuse it until then');
    return { certPem, keyPem };
  }

  /** The own server certificate: the one on disk while it is good, else a new one. */
  private static async ownServerCert(opts: TlsMaterialOptions, ca: KeyPair): Promise<KeyPair> {
    const f = tlsFiles(opts.dataDir);
    const names = (opts.names ?? (() => machineNames(opts.publicHost)))();
    const certPem = readIfThere(f.cert);
    const keyPem = readIfThere(f.key);
    if (certPem && keyPem && TlsMaterial.stillGood(certPem, keyPem, ca.certPem, names, opts.renewBeforeDays ?? 30)) return { certPem, keyPem };
    const issued = await issueServerCert(ca, names);
    writeSecret(f.key, issued.keyPem);
    fs.writeFileSync(f.cert, issued.certPem, { mode: 0o644 });
    opts.log.info({ names, file: f.cert }, 'made a TLS server certificate with sockpit\'s own CA');
    return issued;
  }

  private static stillGood(certPem: string, keyPem: string, caPem: string, names: readonly string[], renewBeforeDays: number): boolean {
    try {
      const cert = new crypto.X509Certificate(certPem);
      // The pair on disk must belong together (two writers of one directory may have crossed).
      if (!cert.checkPrivateKey(crypto.createPrivateKey(keyPem))) return false;
      if (!cert.verify(new crypto.X509Certificate(caPem).publicKey)) return false;
      if (Date.parse(cert.validTo) - Date.now() < renewBeforeDays * DAY_MS) return false;
      const entries = (cert.subjectAltName ?? '').split(', ');
      const covered = new Set(entries.map((e) => canonicalName(e.replace(/^(DNS|IP Address):/, ''))));
      // IPv4 addresses must be there as DNS entries too (certificates.ts says why).
      return names.every((n) => covered.has(canonicalName(n)) && (!net.isIPv4(n) || entries.includes(`DNS:${n}`)));
    } catch {
      return false;
    }
  }
}
