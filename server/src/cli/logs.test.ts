// `dittofs logs` over real files: --since parsing, the last lines read backwards, the --since filter,
// and following a file that grows, is truncated and is replaced.
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rename, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LineSplitter, followFile, lineTime, parseSince, scanLines, showLogs, sinceFilter, tailLines } from './logs.js';

const NOW = new Date('2025-06-01T12:00:00.000Z');

describe('parseSince', () => {
  it('reads durations before now, units combined', () => {
    const ago = (text: string): number => NOW.getTime() - parseSince(text, NOW).getTime();
    assert.equal(ago('10m'), 600_000);
    assert.equal(ago('2h'), 7_200_000);
    assert.equal(ago('30s'), 30_000);
    assert.equal(ago('500ms'), 500);
    assert.equal(ago('1d'), 86_400_000);
    assert.equal(ago('1h30m'), 5_400_000);
    assert.equal(ago('1.5h'), 5_400_000);
    assert.equal(ago(' 5m '), 300_000);
  });

  it('reads RFC 3339 times with Z or an offset, with or without seconds and fractions', () => {
    const at = (text: string): string => parseSince(text, NOW).toISOString();
    assert.equal(at('2024-01-15T10:00:00Z'), '2024-01-15T10:00:00.000Z');
    assert.equal(at('2024-01-15t10:00:00z'), '2024-01-15T10:00:00.000Z');
    assert.equal(at('2024-01-15 10:00:00Z'), '2024-01-15T10:00:00.000Z');
    assert.equal(at('2024-01-15T12:00:00.250+02:00'), '2024-01-15T10:00:00.250Z');
    assert.equal(at('2024-01-15T05:30-04:30'), '2024-01-15T10:00:00.000Z');
    assert.equal(at('2024-02-29T00:00:00Z'), '2024-02-29T00:00:00.000Z');
  });

  it('says what is wrong', () => {
    const problems: [string, RegExp][] = [
      ['2024-01-15T10:00:00', /give the time zone, Z for UTC or an offset such as \+02:00 \(2024-01-15T10:00:00Z\)/],
      ['2023-02-29T10:00:00Z', /not a valid date and time/],
      ['2024-13-01T10:00:00Z', /not a valid date and time/],
      ['2024-01-15T24:00:00Z', /not a valid date and time/],
      ['10', /a duration needs a unit \(ms, s, m, h or d\), such as 10m/],
      ['yesterday', /expected an RFC 3339 time such as 2024-01-15T10:00:00Z .* or a duration such as 30s, 10m, 2h or 1h30m/],
      ['10 m', /expected an RFC 3339 time/],
      ['', /expected an RFC 3339 time/],
      ['-5m', /expected an RFC 3339 time/],
    ];
    for (const [text, re] of problems) assert.throws(() => parseSince(text, NOW), { name: 'RangeError', message: re }, text);
  });
});

describe('lineTime and sinceFilter', () => {
  it('reads the time field: RFC 3339 text or epoch milliseconds', () => {
    assert.equal(lineTime('{"level":"info","time":"2025-06-01T12:00:00.000Z","msg":"x"}'), NOW.getTime());
    assert.equal(lineTime(`{"time":${NOW.getTime()}}`), NOW.getTime());
    assert.equal(lineTime('{"msg":"no time"}'), undefined);
    assert.equal(lineTime('{"time":"soon"}'), undefined);
    assert.equal(lineTime('{"time":'), undefined);
    assert.equal(lineTime('dittofs: failed to start: boom'), undefined);
  });

  it('keeps lines from the cutoff on; untimed lines go with the line before them', () => {
    const t = (iso: string, msg: string): string => JSON.stringify({ time: iso, msg });
    const lines = [
      'dittofs: an old note before any timed line',
      t('2025-06-01T11:00:00.000Z', 'old'),
      'dittofs: an old note',
      t('2025-06-01T12:00:00.000Z', 'at the cutoff'),
      'dittofs: a new note',
      '{"msg":"no time, after a new line"}',
      t('2025-06-01T11:30:00.000Z', 'out of order, old'),
      t('2025-06-01T12:30:00.000Z', 'new'),
    ];
    const keep = sinceFilter(NOW);
    assert.deepEqual(
      lines.filter((l) => keep(l)),
      [lines[3], lines[4], lines[5], lines[7]],
    );
    const all = sinceFilter(undefined);
    assert.ok(lines.every((l) => all(l)));
  });
});

describe('LineSplitter', () => {
  it('gives the same lines wherever the chunks are cut, UTF-8 included', () => {
    const text = 'first\nsecond line é\n\nüñîçødé 🎉\nunfinished';
    const bytes = Buffer.from(text);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const s = new LineSplitter();
      const lines = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut))];
      assert.deepEqual(lines, ['first', 'second line é', '', 'üñîçødé 🎉'], `cut at ${cut}`);
      assert.equal(s.takePartial(), 'unfinished');
    }
  });

  it('cuts a line with no newline for 1 MiB, so memory stays bounded', () => {
    const s = new LineSplitter();
    const out = s.push(Buffer.alloc(1024 * 1024 + 10, 'a'));
    assert.equal(out.length, 1);
    assert.equal(out[0]?.length, 1024 * 1024 + 10);
    assert.equal(s.partialBytes, 0);
  });
});

describe('reading a log file', () => {
  let dir: string;
  let big: string;
  /** Lines of `big`: JSON, one per second from 10:00:00, with a long message every 100th. */
  const bigLines: string[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-logs-'));
    big = path.join(dir, 'big.log');
    const start = Date.parse('2025-06-01T10:00:00.000Z');
    for (let i = 0; i < 5000; i++) {
      const msg = i % 100 === 0 ? `long ${'x'.repeat(3000)}` : `line ${i}`;
      bigLines.push(JSON.stringify({ level: 'info', time: new Date(start + i * 1000).toISOString(), msg }));
    }
    await writeFile(big, `${bigLines.join('\n')}\n`);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('tailLines: the last N lines of a file many chunks long', async () => {
    for (const n of [0, 1, 5, 100, 4999, 5000, 6000]) {
      const r = await tailLines(big, n);
      assert.deepEqual(r.lines, n === 0 ? [] : bigLines.slice(-n), `n=${n}`);
      assert.equal(r.partial, '');
    }
  });

  it('tailLines: an unfinished last line is left for following; a file without newlines', async () => {
    const f = path.join(dir, 'partial.log');
    await writeFile(f, 'a\nb\nhalf');
    const r = await tailLines(f, 5);
    assert.deepEqual(r.lines, ['a', 'b']);
    assert.equal(r.partial, 'half');
    assert.equal(r.end, 4);
    await writeFile(f, 'no newline at all');
    assert.deepEqual(await tailLines(f, 3), { lines: [], partial: 'no newline at all', end: 0 });
    await writeFile(f, '');
    assert.deepEqual(await tailLines(f, 3), { lines: [], partial: '', end: 0 });
  });

  it('scanLines: lines since a time, all of them or the last N', async () => {
    const since = new Date('2025-06-01T11:00:00.000Z'); // line 3600 on
    const emitted: string[] = [];
    const all = await scanLines(big, sinceFilter(since), undefined, async (l) => void emitted.push(l));
    assert.deepEqual(all.lines, []);
    assert.deepEqual(emitted, bigLines.slice(3600));
    const last = await scanLines(big, sinceFilter(since), 3, async () => assert.fail('nothing is emitted with a count'));
    assert.deepEqual(last.lines, bigLines.slice(-3));
  });

  it('showLogs: -n with --since, and a last line without its newline', async () => {
    const f = path.join(dir, 'show.log');
    await writeFile(
      f,
      [JSON.stringify({ time: '2025-06-01T09:00:00Z' }), JSON.stringify({ time: '2025-06-01T13:00:00Z' }), 'dittofs: died'].join('\n'),
    );
    let out = '';
    const opts = {
      file: f,
      follow: false,
      note: () => undefined,
      signal: new AbortController().signal,
      write: async (t: string) => void (out += t),
    };
    await showLogs({ ...opts, lines: 10, since: NOW });
    assert.equal(out, '{"time":"2025-06-01T13:00:00Z"}\ndittofs: died\n');
    out = '';
    await showLogs({ ...opts, lines: 1, since: undefined });
    assert.equal(out, '{"time":"2025-06-01T13:00:00Z"}\ndittofs: died\n', 'the unfinished line comes after the last complete one');
  });

  it('followFile: appended lines, a truncated file, a replaced file; stops when aborted', async () => {
    const f = path.join(dir, 'follow.log');
    await writeFile(f, 'old 1\nold 2\n');
    const { end } = await tailLines(f, 0);
    const got: string[] = [];
    const notes: string[] = [];
    const controller = new AbortController();
    const waitFor = async (n: number): Promise<void> => {
      for (let i = 0; got.length < n; i++) {
        if (i > 3000) assert.fail(`only ${got.length} lines: ${JSON.stringify(got)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const following = followFile({
      file: f,
      from: end,
      keep: (l) => !l.includes('skip'),
      emit: async (l) => void got.push(l),
      note: (t) => notes.push(t),
      signal: controller.signal,
      intervalMs: 10,
    });
    await appendFile(f, 'new 1\nskip me\nnew 2 in ');
    await new Promise((r) => setTimeout(r, 50));
    await appendFile(f, 'two writes\n');
    await waitFor(2);
    assert.deepEqual(got, ['new 1', 'new 2 in two writes']);

    await truncate(f, 0); // logrotate copytruncate
    await new Promise((r) => setTimeout(r, 50));
    await appendFile(f, 'after truncate\n');
    await waitFor(3);
    assert.equal(got[2], 'after truncate');
    assert.match(notes.join('\n'), /was truncated; reading it from the start/);

    await rename(f, `${f}.1`); // rotation by renaming
    await writeFile(f, 'in the new file\n');
    await waitFor(4);
    assert.equal(got[3], 'in the new file');
    assert.match(notes.join('\n'), /was replaced \(rotated\); following the new file/);

    controller.abort();
    await following;
  });
});
