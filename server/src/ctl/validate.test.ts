import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { UsageError } from './errors.js';
import {
  checkShareName,
  findJsonSyntaxError,
  parseId,
  parseJsonObject,
  parseList,
  parseMode,
  parsePort,
  parseServerUrl,
  parseSettingValue,
} from './validate.js';

/** Asserts a UsageError whose message matches. */
function usage(fn: () => unknown, re: RegExp): UsageError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof UsageError, `expected a UsageError, got ${String(caught)}`);
  assert.match(caught.message, re);
  assert.equal(caught.exitCode, 2);
  return caught;
}

describe('parseServerUrl', () => {
  it('keeps scheme, host, port and a path prefix; drops a trailing slash and /api/v1', () => {
    assert.equal(parseServerUrl('http://localhost:8080'), 'http://localhost:8080');
    assert.equal(parseServerUrl('http://localhost:8080/'), 'http://localhost:8080');
    assert.equal(parseServerUrl('https://example.com/dittofs/api/v1/'), 'https://example.com/dittofs');
    assert.equal(parseServerUrl('localhost:8080'), 'http://localhost:8080');
    assert.equal(parseServerUrl('http://[::1]:8080'), 'http://[::1]:8080');
  });
  it('refuses other schemes, credentials, queries and garbage', () => {
    usage(() => parseServerUrl('ftp://host'), /--server: the URL must start with http:\/\/ or https:\/\//);
    usage(() => parseServerUrl('http://u:p@host'), /must not hold credentials/);
    usage(() => parseServerUrl('http://host/?a=1'), /query/);
    usage(() => parseServerUrl('http://exa mple'), /not a valid URL/);
    usage(() => parseServerUrl(''), /got nothing/);
  });
});

describe('number flags', () => {
  it('ports are 1..65535', () => {
    assert.equal(parsePort('2049'), 2049);
    assert.equal(parsePort('65535'), 65535);
    for (const bad of ['0', '65536', '99999', '-1', '20.5', 'nfs', '', '1e3', '0x10'])
      usage(() => parsePort(bad), /--port: expected a port number from 1 to 65535/);
  });
  it('ids are 0..2^32-2', () => {
    assert.equal(parseId('0', '--uid'), 0);
    assert.equal(parseId('4294967294', '--uid'), 4294967294);
    usage(() => parseId('4294967295', '--uid'), /--uid: expected a number from 0 to 4294967294, got "4294967295"/);
    usage(() => parseId('-5', '--gid'), /--gid/);
  });
  it('modes are octal', () => {
    assert.equal(parseMode('755'), 0o755);
    assert.equal(parseMode('0750'), 0o750);
    assert.equal(parseMode('0o1777'), 0o1777);
    usage(() => parseMode('0789'), /--root-mode: expected octal mode bits/);
    usage(() => parseMode('rwx'), /--root-mode/);
  });
});

describe('lists, share names, settings', () => {
  it('lists', () => {
    assert.deepEqual(parseList('a, b,,c '), ['a', 'b', 'c']);
    assert.deepEqual(parseList(''), []);
  });
  it('share names', () => {
    assert.equal(checkShareName('/export', '--name'), '/export');
    assert.equal(checkShareName('archive', '--name'), '/archive');
    usage(() => checkShareName('/a/../b', '--name'), /--name: the share name must not contain "\.\."/);
    usage(() => checkShareName('/a/', '--name'), /must not end with/);
  });
  it('setting values', () => {
    assert.equal(parseSettingValue('debug'), 'debug');
    assert.equal(parseSettingValue('5'), 5);
    assert.equal(parseSettingValue('true'), true);
    assert.equal(parseSettingValue('"5"'), '5');
    assert.equal(parseSettingValue('05'), '05');
  });
});

describe('--config JSON', () => {
  it('parses objects', () => {
    assert.deepEqual(parseJsonObject('{"bucket":"b","force_path_style":true,"n":[1,2.5e3,null]}'), {
      bucket: 'b',
      force_path_style: true,
      n: [1, 2500, null],
    });
    assert.deepEqual(parseJsonObject(' {} '), {});
  });

  it('names the position of a syntax error and never quotes the text', () => {
    const secret = 'AKIASECRETSECRET';
    const e = usage(
      () => parseJsonObject(`{"bucket":"b" "secret_access_key":"${secret}"}`),
      /^--config: invalid JSON at column 15 \(position 14\): expected ',' or '}' after a property value, found '"'$/,
    );
    assert.ok(!e.message.includes(secret) && !(e.hint ?? '').includes(secret));
    usage(() => parseJsonObject('{"a":1,}'), /column 8 \(position 7\): trailing comma before '}'/);
    usage(() => parseJsonObject("{'a':1}"), /column 2 .*expected a property name in double quotes, found "'"/);
    usage(() => parseJsonObject('{"a":}'), /column 6 .*expected a value, found '}'/);
    usage(() => parseJsonObject('{"a":1'), /column 7 .*found the end of the input/);
    usage(() => parseJsonObject('{\n  "a": 1\n  "b": 2\n}'), /^--config: invalid JSON at line 3, column 3 \(position 13\)/);
    usage(() => parseJsonObject('{"a":tru}'), /column 6 .*expected a value, found an unquoted word/);
    usage(() => parseJsonObject('{} x'), /column 4 .*expected the end of the input after the JSON value, found an unquoted word/);
    usage(() => parseJsonObject(''), /column 1 .*found the end of the input/);
  });

  it('wants an object', () => {
    usage(() => parseJsonObject('[1]'), /^--config: expected a JSON object, got an array$/);
    usage(() => parseJsonObject('null'), /got null$/);
    usage(() => parseJsonObject('"x"'), /got a string$/);
  });

  it('agrees with JSON.parse on what is valid, for any text', () => {
    const jsonish = fc.oneof(
      fc.json(),
      fc.string(),
      fc.json().map((j) => j.slice(0, Math.max(0, j.length - 1))),
      fc.tuple(fc.json(), fc.nat(), fc.constantFrom(',', '}', ']', '"', ':', ' ', 'x', "'")).map(([j, i, c]) => {
        const at = j.length === 0 ? 0 : i % j.length;
        return j.slice(0, at) + c + j.slice(at);
      }),
    );
    fc.assert(
      fc.property(jsonish, (text) => {
        let valid = true;
        try {
          JSON.parse(text);
        } catch {
          valid = false;
        }
        const err = findJsonSyntaxError(text);
        assert.equal(err === undefined, valid, `${JSON.stringify(text)}: ${err?.message}`);
        if (err !== undefined) assert.ok(err.pos >= 0 && err.pos <= text.length);
      }),
      { numRuns: 2000 },
    );
  });
});
