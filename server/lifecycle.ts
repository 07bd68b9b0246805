import type { Logger } from 'pino';

interface Closer {
  name: string;
  close: () => unknown;
}

/**
 * The parts of a running app and how each closes, as fastify's onClose hooks: each part
 * registers its own close when it is created, and they run in reverse order of creation, so a
 * part closes before what it was built on. A failing close is logged and the others still run.
 */
export class Lifecycle {
  private readonly closers: Closer[] = [];
  private closing: Promise<void> | null = null;

  constructor(private readonly log: Logger) {}

  /** Registers `part` with its close; returns the part. */
  add<T>(name: string, part: T, close: (part: T) => unknown): T {
    this.onClose(name, () => close(part));
    return part;
  }

  onClose(name: string, close: () => unknown): void {
    if (this.closing) throw new Error(`cannot add "${name}": the app is closing`);
    this.closers.push({ name, close });
  }

  /** Closes every part, newest first; later calls return the same promise. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const { name, close } of this.closers.reverse()) {
        try {
          await close();
        } catch (err) {
          this.log.error({ err, part: name }, 'a part failed to close');
        }
      }
    })();
    return this.closing;
  }
}
