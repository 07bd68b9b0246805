import { createApp } from './app';
import { ConfigError, loadConfig } from './config';

/** Entry point: parse settings, listen, handle signals. Everything else lives in createApp. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sockpit: bad setting ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const app = await createApp(config);
  await app.listen();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, 'signal received');
    const force = setTimeout(() => {
      app.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, 20_000);
    force.unref();
    app.close().then(
      () => process.exit(0),
      (err) => {
        app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: Error & { code?: string; syscall?: string; port?: number }) => {
  // Operational start-up failures get one clear line; anything else is a bug worth its stack.
  if (err.code === 'EADDRINUSE') process.stderr.write(`sockpit: port ${err.port} is already in use (set PORT or DEVICE_PORT)\n`);
  else if (err.code === 'EACCES') process.stderr.write(`sockpit: not allowed to listen on port ${err.port}\n`);
  else if (err.code === 'ECONNREFUSED' || /connect|database|migration|SQLITE/i.test(err.message)) process.stderr.write(`sockpit: cannot start: ${err.message}\n`);
  else process.stderr.write(`sockpit: failed to start: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
