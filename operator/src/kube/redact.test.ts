import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../log.js';
import { redactedLabel, redactingLogger, SecretValues } from './redact.js';

const LABEL = redactedLabel('s3', 'secret');

describe('SecretValues', () => {
  it('replaces a value, its trimmed, JSON-string, base64 and URL-encoded forms, wherever they are', () => {
    const s = new SecretValues();
    const v = 'a"b\\c/d +e\n';
    s.remember('ns', 's3', 'secret', v);
    const inner = JSON.stringify(v).slice(1, -1);
    for (const text of [
      `got ${v}`,
      `got ${JSON.stringify(v)}`,
      `got "${JSON.stringify(inner).slice(1, -1)}"`,
      `data: ${Buffer.from(v).toString('base64')}`,
      `url ${encodeURIComponent(v.trim())}`,
      `trimmed ${v.trim()}!`,
    ]) {
      const out = s.redact(text);
      assert.ok(out.includes(LABEL), `${text} -> ${out}`);
      assert.ok(!out.includes('a"b') && !out.includes('c/d') && !out.includes('b\\\\c'), `${text} -> ${out}`);
    }
    assert.equal(s.redact('nothing here'), 'nothing here');
  });

  it('redacting twice changes nothing, even for a value that is a word of the label', () => {
    const s = new SecretValues();
    s.remember('ns', 'x', 'k', 'valueSecret');
    const once = s.redact('the valueSecret is valueSecret');
    assert.equal(once, `the ${redactedLabel('x', 'k')} is ${redactedLabel('x', 'k')}`);
    assert.equal(s.redact(once), once);
    // A value that is a word of the label itself.
    s.remember('ns', 'secret', 'k', 'of Secret');
    const label = redactedLabel('secret', 'k');
    assert.equal(s.redact(once), once);
    assert.equal(s.redact('key of Secret here'), `key ${label} here`);
    assert.equal(s.redact(s.redact('key of Secret here')), `key ${label} here`);
  });

  it('short values (settings such as a region) are not looked for: a status keeps its times and names', () => {
    const s = new SecretValues();
    s.remember('ns', 'flags', 'x', '12');
    s.remember('ns', 'bucket', 'bucket', 'dittofs');
    const status = {
      conditions: [
        { type: 'Synced', status: 'False', reason: 'Refused', lastTransitionTime: '2026-12-06T12:34:56Z', message: 'dittofs 12' },
      ],
      dittofs: 'files',
    };
    assert.deepEqual(s.redactDeep(status), status);
    assert.equal(s.redact('dittofs-api 12'), 'dittofs-api 12');
  });

  it('a message cut short loses a tail that begins a value', () => {
    const s = new SecretValues();
    s.remember('ns', 's3', 'secret', 'abcdefghijklmnop');
    assert.equal(s.redact('got "abcdefgh…'), `got "${LABEL}…`);
    assert.equal(s.redact('got "abc…'), 'got "abc…', 'three characters say nothing');
  });

  it('a new value of the same key replaces the old; objects of a namespace only see that namespace', () => {
    const s = new SecretValues();
    s.remember('a', 's3', 'secret', 'first-value');
    s.remember('a', 's3', 'secret', 'second-value');
    assert.equal(s.redact('first-value second-value'), `first-value ${LABEL}`);
    assert.equal(s.forNamespace('b').redact('second-value'), 'second-value');
    assert.equal(s.forNamespace('a').redact('second-value'), LABEL);
  });

  it('redactDeep: every string value of a status, not keys nor the fields naming a condition or a time; the input is not changed', () => {
    const s = new SecretValues();
    s.remember('ns', 's3', 'secret', 'hunter22');
    s.remember('ns', 'times', 'k', '2026-12-06T12:34:56Z');
    const status = {
      conditions: [{ type: 'Synced', reason: 'hunter22', lastTransitionTime: '2026-12-06T12:34:56Z', message: 'got hunter22' }],
      n: 1,
      hunter22: 'hunter22',
    };
    assert.deepEqual(s.redactDeep(status), {
      conditions: [{ type: 'Synced', reason: 'hunter22', lastTransitionTime: '2026-12-06T12:34:56Z', message: `got ${LABEL}` }],
      n: 1,
      hunter22: LABEL,
    });
    assert.equal(status.conditions[0]!.message, 'got hunter22');
  });
});

describe('redactingLogger', () => {
  it('redacts messages, fields and the fields of child loggers; wrapping twice is one wrapper', () => {
    const lines: string[] = [];
    const s = new SecretValues();
    const log = redactingLogger(createLogger({ level: 'info', write: (l) => lines.push(l) }), s);
    assert.equal(redactingLogger(log, s), log);
    s.remember('ns', 's3', 'secret', 'hunter22');
    log.child({ who: 'hunter22' }).warn('failed: hunter22', { err: 'PUT: 400 got "hunter22"', nested: { a: ['hunter22'] } });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]!.includes('hunter22'), lines[0]);
    assert.equal((lines[0]!.match(/<value of Secret s3 key secret>/g) ?? []).length, 4);
  });
});
