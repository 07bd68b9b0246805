/**
 * The storage contract: what every engine behind the Storage interface (server/storage/types.ts)
 * must do, written once and run against each engine, as aedes-persistence's abstract.js does for
 * its backends. tests/storage/contract.test.ts runs it on SQLite, and on PostgreSQL in the
 * `postgres` jest project (a fresh database for each test, tests/support/pg.ts).
 *
 * A new engine passes when `storageContract('its name', open)` passes.
 */
import type { Kysely } from 'kysely';
import { Command, CommandStatus, DuplicateError, LastAdminError, Storage, TelemetryRow } from '../../server/storage';

const T0 = 1_700_000_000_000;

function command(id: string, deviceId: string, over: Partial<Command> = {}): Command {
  return {
    id,
    deviceId,
    action: 'togglerele',
    params: null,
    status: 'queued',
    result: null,
    error: null,
    createdAt: T0,
    updatedAt: T0,
    expiresAt: T0 + 60_000,
    sentAt: null,
    sentBy: 'owner',
    sentByUserId: 1,
    ...over,
  };
}

const reading = (deviceId: string, msgId: string | null, ts: number, data: Record<string, unknown> = { ts }): TelemetryRow => ({ deviceId, msgId, ts, data });

export function storageContract(engine: 'sqlite' | 'postgres', open: () => Promise<Storage>): void {
  describe(`storage contract (${engine})`, () => {
    let s: Storage;

    beforeEach(async () => {
      s = await open();
    });

    afterEach(async () => {
      await s.close();
    });

    test('when it is opened, then it is the engine asked for and answers a ping', async () => {
      expect(s.kind).toBe(engine);
      await expect(s.ping()).resolves.toBeUndefined();
    });

    describe('settings', () => {
      test('when a setting is initialised twice, then the first value stays', async () => {
        expect(await s.getSetting('secret')).toBeNull();
        expect(await s.initSetting('secret', 'first')).toBe('first');
        expect(await s.initSetting('secret', 'second')).toBe('first');
        expect(await s.getSetting('secret')).toBe('first');
      });
    });

    describe('users', () => {
      test('when users are created, then they are found by name and id, listed by name and counted, admins apart', async () => {
        const bob = await s.createUser({ username: 'bob', passwordHash: 'h1', role: 'viewer' });
        const ann = await s.createUser({ username: 'ann', passwordHash: 'h2', role: 'admin' });
        expect(bob).toMatchObject({ id: expect.any(Number), username: 'bob', passwordHash: 'h1', role: 'viewer', createdAt: expect.any(Number) });
        expect(ann!.id).not.toBe(bob!.id);
        expect(await s.getUserByName('bob')).toEqual(bob);
        expect(await s.getUserById(ann!.id)).toEqual(ann);
        expect(await s.getUserByName('nobody')).toBeNull();
        expect(await s.getUserById(ann!.id + bob!.id + 1000)).toBeNull();
        expect((await s.listUsers()).map((u) => u.username)).toEqual(['ann', 'bob']);
        expect(await s.countUsers()).toBe(2);
        expect(await s.countAdmins()).toBe(1);
      });

      test('when a user name is taken, then creating it again is a DuplicateError', async () => {
        await s.createUser({ username: 'bob', passwordHash: 'h1', role: 'viewer' });
        await expect(s.createUser({ username: 'bob', passwordHash: 'h2', role: 'admin' })).rejects.toBeInstanceOf(DuplicateError);
        expect(await s.countUsers()).toBe(1);
      });

      test('when the first owner is created only if nobody exists, then of eight racing setups exactly one creates a user', async () => {
        // The race is narrow, so it is run many times over, starting from no users each time.
        for (let round = 0; round < 25; round++) {
          for (const u of await s.listUsers()) await s.deleteUser(u.id);
          const made = await Promise.all(
            Array.from({ length: 8 }, (_, i) => s.createUser({ username: `first${i}`, passwordHash: 'h', role: 'admin' }, true)),
          );
          expect(made.filter((u) => u !== null)).toHaveLength(1);
        }
        expect(await s.countUsers()).toBe(1);
        expect(await s.createUser({ username: 'third', passwordHash: 'h', role: 'admin' }, true)).toBeNull();
      });

      test('when a role or password is changed or a user deleted, then it says whether the user existed', async () => {
        const u = (await s.createUser({ username: 'bob', passwordHash: 'h1', role: 'viewer' }))!;
        expect(await s.setUserRole(u.id, 'operator')).toBe(true);
        expect(await s.setUserPassword(u.id, 'h2')).toBe(true);
        expect(await s.getUserById(u.id)).toMatchObject({ role: 'operator', passwordHash: 'h2' });
        expect(await s.deleteUser(u.id)).toBe(true);
        expect(await s.getUserById(u.id)).toBeNull();
        expect(await s.deleteUser(u.id)).toBe(false);
        expect(await s.setUserRole(u.id, 'admin')).toBe(false);
        expect(await s.setUserPassword(u.id, 'h3')).toBe(false);
      });

      test('when the last admin would be demoted or deleted with keepAnAdmin, then it is refused; others change as usual', async () => {
        const a = (await s.createUser({ username: 'ann', passwordHash: 'h', role: 'admin' }))!;
        const v = (await s.createUser({ username: 'val', passwordHash: 'h', role: 'viewer' }))!;
        await expect(s.setUserRole(a.id, 'operator', true)).rejects.toBeInstanceOf(LastAdminError);
        await expect(s.deleteUser(a.id, true)).rejects.toBeInstanceOf(LastAdminError);
        expect(await s.getUserById(a.id)).toMatchObject({ role: 'admin' });
        expect(await s.setUserRole(a.id, 'admin', true)).toBe(true);
        expect(await s.setUserRole(v.id, 'operator', true)).toBe(true);
        expect(await s.deleteUser(v.id, true)).toBe(true);
        expect(await s.setUserRole(v.id, 'viewer', true)).toBe(false);
        expect(await s.deleteUser(v.id, true)).toBe(false);
      });

      test('when two admins demote or delete each other at once with keepAnAdmin, then one admin is left', async () => {
        // The race is narrow, so it is run many times over.
        for (let round = 0; round < 25; round++) {
          for (const u of await s.listUsers()) await s.deleteUser(u.id);
          const a = (await s.createUser({ username: 'ann', passwordHash: 'h', role: 'admin' }))!;
          const b = (await s.createUser({ username: 'bob', passwordHash: 'h', role: 'admin' }))!;
          const results = await Promise.allSettled([
            round % 2 === 0 ? s.setUserRole(a.id, 'viewer', true) : s.deleteUser(a.id, true),
            s.setUserRole(b.id, 'operator', true),
          ]);
          expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
          expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: expect.any(LastAdminError) });
          expect(await s.countAdmins()).toBe(1);
        }
      });
    });

    describe('devices', () => {
      test('when a device is created, then it has no last-seen time, firmware or latest reading yet, and the list is ordered by id', async () => {
        const d = await s.createDevice({ id: 'b-1', name: 'Kitchen', tokenHash: 't1' });
        await s.createDevice({ id: 'a-1', name: 'Cellar', tokenHash: 't2' });
        expect(d).toEqual({ id: 'b-1', name: 'Kitchen', tokenHash: 't1', createdAt: expect.any(Number), lastSeen: null, firmware: null, latest: null, latestAt: null });
        expect(await s.getDevice('b-1')).toEqual(d);
        expect(await s.getDevice('nope')).toBeNull();
        expect((await s.listDevices()).map((x) => x.id)).toEqual(['a-1', 'b-1']);
        await expect(s.createDevice({ id: 'b-1', name: 'again', tokenHash: 't3' })).rejects.toBeInstanceOf(DuplicateError);
      });

      test('when a token is replaced or a device seen, then it is kept; firmware stays unless given', async () => {
        await s.createDevice({ id: 'd1', name: 'd1', tokenHash: 't1' });
        expect(await s.setDeviceToken('d1', 't2')).toBe(true);
        expect(await s.setDeviceToken('nope', 't2')).toBe(false);
        await s.markDeviceSeen('d1', T0, 'fw/1');
        expect(await s.getDevice('d1')).toMatchObject({ tokenHash: 't2', lastSeen: T0, firmware: 'fw/1' });
        await s.markDeviceSeen('d1', T0 + 5);
        expect(await s.getDevice('d1')).toMatchObject({ lastSeen: T0 + 5, firmware: 'fw/1' });
        await s.markDeviceSeen('d1', T0 + 6, null);
        expect(await s.getDevice('d1')).toMatchObject({ lastSeen: T0 + 6, firmware: null });
        await expect(s.markDeviceSeen('nope', T0)).resolves.toBeUndefined();
      });

      test('when a device is marked seen at an earlier time than it was, then its last seen stays the later one', async () => {
        // An instance that saw the device go offline may report after the one it reconnected to.
        await s.createDevice({ id: 'd1', name: 'd1', tokenHash: 't1' });
        await s.markDeviceSeen('d1', T0 + 100, 'fw/2');
        await s.markDeviceSeen('d1', T0 + 50);
        expect(await s.getDevice('d1')).toMatchObject({ lastSeen: T0 + 100, firmware: 'fw/2' });
        await s.insertTelemetry([{ deviceId: 'd1', msgId: 'm1', ts: T0 + 200, data: { v: 1 } }]);
        await s.markDeviceSeen('d1', T0 + 150, 'fw/3');
        expect(await s.getDevice('d1')).toMatchObject({ lastSeen: T0 + 200, firmware: 'fw/3' });
      });

      test('when a device is deleted, then its telemetry and commands go with it and other devices keep theirs', async () => {
        await s.createDevice({ id: 'gone', name: 'gone', tokenHash: 't' });
        await s.createDevice({ id: 'kept', name: 'kept', tokenHash: 't' });
        await s.insertTelemetry([reading('gone', 'g1', T0), reading('kept', 'k1', T0)]);
        await s.insertCommand(command('c-gone', 'gone'));
        await s.insertCommand(command('c-kept', 'kept'));
        expect(await s.deleteDevice('gone')).toBe(true);
        expect(await s.getDevice('gone')).toBeNull();
        expect(await s.countTelemetry('gone')).toBe(0);
        expect(await s.getCommand('c-gone')).toBeNull();
        expect(await s.countTelemetry('kept')).toBe(1);
        expect(await s.getCommand('c-kept')).not.toBeNull();
        expect(await s.deleteDevice('gone')).toBe(false);
      });

      test('when a device is deleted while commands for it are being stored, then none of them is left behind', async () => {
        for (let round = 0; round < 20; round++) {
          const id = `cmd-${round}`;
          await s.createDevice({ id, name: id, tokenHash: 't' });
          const inserts = Array.from({ length: 4 }, (_, i) => s.insertCommand(command(`${id}-c${i}`, id)));
          const deleted = s.deleteDevice(id);
          await Promise.all([...inserts, deleted]);
          expect(await deleted).toBe(true);
          expect(await s.listCommands(id, 10)).toEqual([]);
        }
      });

      test('when a device is deleted while batches of its telemetry are being stored, then none of its readings is left behind', async () => {
        // The race is narrow, so it is run many times over.
        for (let round = 0; round < 20; round++) {
          const id = `busy-${round}`;
          await s.createDevice({ id, name: id, tokenHash: 't' });
          const batches = Array.from({ length: 4 }, (_, b) =>
            s.insertTelemetry(Array.from({ length: 50 }, (_, i) => reading(id, `b${b}-${i}`, T0 + b * 100 + i))),
          );
          const deleted = s.deleteDevice(id);
          await Promise.all([...batches, deleted]);
          expect(await deleted).toBe(true);
          expect(await s.countTelemetry(id)).toBe(0);
        }
      });
    });

    describe('telemetry', () => {
      beforeEach(async () => {
        await s.createDevice({ id: 'd1', name: 'd1', tokenHash: 't' });
        await s.createDevice({ id: 'd2', name: 'd2', tokenHash: 't' });
      });

      test('when a (device, message id) comes again, in the same batch or a later one, then it is stored once; readings without an id are all stored', async () => {
        await s.insertTelemetry([reading('d1', 'm1', T0), reading('d1', 'm1', T0 + 1), reading('d1', 'm2', T0 + 2), reading('d2', 'm1', T0 + 3)]);
        await s.insertTelemetry([reading('d1', 'm2', T0 + 4), reading('d1', 'm3', T0 + 5)]);
        await s.insertTelemetry([reading('d1', null, T0 + 6), reading('d1', null, T0 + 7)]);
        expect(await s.countTelemetry('d1')).toBe(5);
        expect(await s.countTelemetry('d2')).toBe(1);
        expect(await s.countTelemetry()).toBe(6);
        // A later batch never replaces what is stored. Within one batch either copy may be the one
        // kept (PostgreSQL's plan may reorder the rows); a resend carries the same data anyway.
        const ts = (await s.telemetryHistory('d1', 10)).map((p) => p.ts);
        expect(ts.slice(1)).toEqual([T0 + 2, T0 + 5, T0 + 6, T0 + 7]);
        expect([T0, T0 + 1]).toContain(ts[0]);
        await expect(s.insertTelemetry([])).resolves.toBeUndefined();
      });

      test('when a batch holds readings of an unknown device, then those are skipped and the rest is stored', async () => {
        await s.insertTelemetry([reading('ghost', 'm1', T0), reading('d1', 'm1', T0)]);
        expect(await s.countTelemetry('ghost')).toBe(0);
        expect(await s.countTelemetry('d1')).toBe(1);
        expect(await s.getDevice('ghost')).toBeNull();
      });

      test('when a batch is stored, then each device’s latest reading is its newest one and its last-seen time never goes back', async () => {
        await s.markDeviceSeen('d2', T0 + 1000);
        await s.insertTelemetry([
          reading('d1', 'a', T0 + 20, { v: 'newest' }),
          reading('d1', 'b', T0 + 10, { v: 'older' }),
          reading('d2', 'a', T0 + 5, { v: 'd2' }),
        ]);
        expect(await s.getDevice('d1')).toMatchObject({ latest: { v: 'newest' }, latestAt: T0 + 20, lastSeen: T0 + 20 });
        expect(await s.getDevice('d2')).toMatchObject({ latest: { v: 'd2' }, latestAt: T0 + 5, lastSeen: T0 + 1000 });
      });

      test('when batches are stored out of order, then a device’s latest reading stays its newest one', async () => {
        await s.insertTelemetry([reading('d1', 'new', T0 + 20, { v: 'newest' })]);
        await s.insertTelemetry([reading('d1', 'old', T0 + 10, { v: 'older' })]);
        expect(await s.getDevice('d1')).toMatchObject({ latest: { v: 'newest' }, latestAt: T0 + 20, lastSeen: T0 + 20 });
        expect(await s.countTelemetry('d1')).toBe(2);
      });

      test('when a range has more distinct keys than the cap, then the key pass answers null having read at most cap + 1 keys from the database', async () => {
        // Three readings of 50 keys of their own: 150 distinct keys in one page, against a cap of 10.
        const keysOf = (r: number) => Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`r${r}k${i}`, i]));
        await s.insertTelemetry([0, 1, 2].map((r) => reading('d1', `m${r}`, T0 + r, keysOf(r))));
        expect(await s.telemetryKeys('d1', { from: T0, to: T0 + 10, limit: 1000 }, 200)).toHaveLength(150);
        // Both engines are Kysely's: what each query brought back is seen at its executor.
        const executor = (s as unknown as { db: Kysely<unknown> }).db.getExecutor();
        const queries = jest.spyOn(executor, 'executeQuery');
        try {
          expect(await s.telemetryKeys('d1', { from: T0, to: T0 + 10, limit: 1000 }, 10)).toBeNull();
          const results = await Promise.all(queries.mock.results.map((r) => r.value as Promise<{ rows: object[] }>));
          const keysRead = results.flatMap((r) => r.rows).filter((row) => 'key' in row);
          expect(keysRead.length).toBeLessThanOrEqual(11);
        } finally {
          queries.mockRestore();
        }
      });

      test('when history is asked for, then it is the newest `limit` readings of that device, oldest first, with their data', async () => {
        const rows = Array.from({ length: 20 }, (_, i) => reading('d1', `m${i}`, T0 + i * 10, { seq: i, nested: { ok: true }, list: [1, 'two', null] }));
        await s.insertTelemetry(rows.slice(10));
        await s.insertTelemetry(rows.slice(0, 10));
        await s.insertTelemetry([reading('d2', 'x', T0 + 5)]);
        const last5 = await s.telemetryHistory('d1', 5);
        expect(last5.map((p) => p.data.seq)).toEqual([15, 16, 17, 18, 19]);
        expect(last5[0]).toEqual({ ts: T0 + 150, data: { seq: 15, nested: { ok: true }, list: [1, 'two', null] } });
        expect(await s.telemetryHistory('d1', 100)).toHaveLength(20);
        expect(await s.telemetryHistory('nope', 10)).toEqual([]);
      });

      test('when history is asked for readings larger than the size cap, then it is the newest that fit, at least one, oldest first', async () => {
        const pad = 'x'.repeat(1000);
        await s.insertTelemetry(Array.from({ length: 10 }, (_, i) => reading('d1', `big${i}`, T0 + i, { seq: i, pad })));
        const one = JSON.stringify({ seq: 0, pad }).length;
        expect((await s.telemetryHistory('d1', 10, 3 * one + 10)).map((p) => p.data.seq)).toEqual([7, 8, 9]);
        expect((await s.telemetryHistory('d1', 10, 1)).map((p) => p.data.seq)).toEqual([9]);
        expect(await s.telemetryHistory('d1', 10)).toHaveLength(10);
      });
    });

    describe('commands', () => {
      beforeEach(async () => {
        await s.createDevice({ id: 'd1', name: 'd1', tokenHash: 't' });
        await s.createDevice({ id: 'd2', name: 'd2', tokenHash: 't' });
      });

      test('when a command names a device that does not exist, then nothing is stored and it says so', async () => {
        expect(await s.insertCommand(command('c-ghost', 'ghost'))).toBe(false);
        expect(await s.getCommand('c-ghost')).toBeNull();
      });

      test('when a command is stored, then it reads back as it was written', async () => {
        const c = command('c1', 'd1', { action: 'changesetting', params: { interval_ms: 1000 }, sentBy: 'ann', sentByUserId: 7 });
        expect(await s.insertCommand(c)).toBe(true);
        expect(await s.getCommand('c1')).toEqual(c);
        expect(await s.getCommand('nope')).toBeNull();
      });

      test('when a command moves on, then each transition happens once: only from the states given, only for its own device', async () => {
        await s.insertCommand(command('c1', 'd1'));
        const sent = await s.updateCommand('c1', ['queued'], { status: 'sent', sentAt: T0 + 1, updatedAt: T0 + 1 });
        expect(sent).toMatchObject({ id: 'c1', status: 'sent', sentAt: T0 + 1, updatedAt: T0 + 1 });
        expect(await s.updateCommand('c1', ['queued'], { status: 'sent', sentAt: T0 + 2, updatedAt: T0 + 2 })).toBeNull();
        // An ack names its device: another device's ack for this id changes nothing.
        expect(await s.updateCommand('c1', ['sent'], { status: 'acked', updatedAt: T0 + 3 }, 'd2')).toBeNull();
        const acked = await s.updateCommand('c1', ['sent', 'timeout'], { status: 'acked', result: { relay: true }, updatedAt: T0 + 4 }, 'd1');
        expect(acked).toMatchObject({ status: 'acked', result: { relay: true }, sentAt: T0 + 1, updatedAt: T0 + 4 });
        expect(await s.getCommand('c1')).toEqual(acked);
        await s.insertCommand(command('c2', 'd1', { status: 'sent', sentAt: T0, result: { partial: true } }));
        const failed = await s.updateCommand('c2', ['sent'], { status: 'failed', error: 'unknown setting', result: null, updatedAt: T0 + 5 });
        expect(failed).toMatchObject({ status: 'failed', error: 'unknown setting', result: null });
        expect(await s.updateCommand('nope', ['queued'], { status: 'sent', updatedAt: T0 })).toBeNull();
      });

      test('when several updates race for the same transition, then exactly one wins', async () => {
        await s.insertCommand(command('c1', 'd1'));
        const from: CommandStatus[] = ['queued'];
        const results = await Promise.all(Array.from({ length: 8 }, (_, i) => s.updateCommand('c1', from, { status: 'sent', sentAt: T0 + i, updatedAt: T0 + i })));
        const winners = results.filter((r) => r !== null);
        expect(winners).toHaveLength(1);
        expect(await s.getCommand('c1')).toMatchObject({ status: 'sent', sentAt: winners[0]!.sentAt });
      });

      test('when commands are listed, then they are a device’s own, newest first, at most `limit`; queued ones are the unexpired ones, oldest first', async () => {
        await s.insertCommand(command('old', 'd1', { createdAt: T0, expiresAt: T0 + 100 }));
        await s.insertCommand(command('mid', 'd1', { createdAt: T0 + 10, expiresAt: T0 + 1000 }));
        await s.insertCommand(command('new', 'd1', { createdAt: T0 + 20, expiresAt: T0 + 1000 }));
        await s.insertCommand(command('sent', 'd1', { createdAt: T0 + 30, status: 'sent', sentAt: T0 + 30 }));
        await s.insertCommand(command('other', 'd2', { createdAt: T0 + 40 }));
        expect((await s.listCommands('d1', 10)).map((c) => c.id)).toEqual(['sent', 'new', 'mid', 'old']);
        expect((await s.listCommands('d1', 2)).map((c) => c.id)).toEqual(['sent', 'new']);
        expect((await s.queuedCommands('d1', T0 + 100)).map((c) => c.id)).toEqual(['mid', 'new']);
        expect((await s.queuedCommands('d1', T0 + 99)).map((c) => c.id)).toEqual(['old', 'mid', 'new']);
      });

      test('when the sweeps run, then queued commands past their expiry become expired and sent ones past the timeout become timeout, each once', async () => {
        await s.insertCommand(command('due', 'd1', { expiresAt: T0 + 100 }));
        await s.insertCommand(command('fresh', 'd1', { expiresAt: T0 + 1000 }));
        await s.insertCommand(command('late', 'd1', { status: 'sent', sentAt: T0 }));
        await s.insertCommand(command('recent', 'd1', { status: 'sent', sentAt: T0 + 500 }));
        await s.insertCommand(command('done', 'd1', { status: 'acked', sentAt: T0, expiresAt: T0 }));

        const expired = await s.expireQueued(T0 + 100);
        expect(expired.map((c) => [c.id, c.status, c.updatedAt])).toEqual([['due', 'expired', T0 + 100]]);
        expect(expired[0]!.error).toEqual(expect.any(String));
        expect(await s.expireQueued(T0 + 100)).toEqual([]);

        const timedOut = await s.timeoutSent(T0 + 500, T0 + 600);
        expect(timedOut.map((c) => [c.id, c.status, c.updatedAt])).toEqual([['late', 'timeout', T0 + 600]]);
        expect(timedOut[0]!.error).toEqual(expect.any(String));
        expect(await s.timeoutSent(T0 + 500, T0 + 700)).toEqual([]);

        expect(await s.getCommand('fresh')).toMatchObject({ status: 'queued' });
        expect(await s.getCommand('recent')).toMatchObject({ status: 'sent' });
        expect(await s.getCommand('done')).toMatchObject({ status: 'acked' });
      });
    });

    describe('sessions', () => {
      test('when a session is set, read, extended, replaced and destroyed, then each takes effect; an expired one reads as none', async () => {
        await s.setSession('sid-1', '{"a":1}', T0 + 1000);
        expect(await s.getSession('sid-1', T0)).toBe('{"a":1}');
        expect(await s.getSession('sid-1', T0 + 1000)).toBeNull();
        await s.touchSession('sid-1', T0 + 2000);
        expect(await s.getSession('sid-1', T0 + 1500)).toBe('{"a":1}');
        await s.setSession('sid-1', '{"a":2}', T0 + 3000);
        expect(await s.getSession('sid-1', T0 + 2500)).toBe('{"a":2}');
        await s.destroySession('sid-1');
        expect(await s.getSession('sid-1', T0)).toBeNull();
        await expect(s.touchSession('nope', T0)).resolves.toBeUndefined();
        await expect(s.destroySession('nope')).resolves.toBeUndefined();
      });

      test('when sessions are pruned, then only the expired ones go, and their number is returned', async () => {
        await s.setSession('old-1', '{}', T0);
        await s.setSession('old-2', '{}', T0 + 10);
        await s.setSession('live', '{}', T0 + 1000);
        expect(await s.pruneSessions(T0 + 10)).toBe(2);
        expect(await s.pruneSessions(T0 + 10)).toBe(0);
        expect(await s.getSession('live', T0 + 10)).toBe('{}');
      });
    });
  });
}
