import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatByteSize, parseByteSize } from './sizes.js';

describe('parseByteSize', () => {
  const cases: [number | string, number][] = [
    [0, 0],
    [65536, 65536],
    ['65536', 65536],
    ['512B', 512],
    ['64KiB', 64 * 1024],
    ['64kib', 64 * 1024],
    ['4MiB', 4 * 2 ** 20],
    ['4 MiB', 4 * 2 ** 20],
    ['  256Mi ', 256 * 2 ** 20],
    ['1GiB', 2 ** 30],
    ['1.5GiB', 1.5 * 2 ** 30],
    ['2TiB', 2 * 2 ** 40],
    ['1k', 1000],
    ['1kB', 1000],
    ['10MB', 10_000_000],
    ['3G', 3e9],
    ['0.5KiB', 512],
  ];
  for (const [input, want] of cases) {
    it(`${JSON.stringify(input)} -> ${want}`, () => assert.equal(parseByteSize(input), want));
  }

  const bad: [number | string, RegExp][] = [
    ['', /expected a size/],
    ['lots', /expected a size/],
    ['-1MiB', /expected a size/],
    ['4 XB', /unknown size unit "XB"/],
    ['1.3B', /not a whole number of bytes/],
    ['0.1KiB', /not a whole number of bytes/],
    ['99999999TiB', /too large/],
    [-5, /whole number of bytes/],
    [1.5, /whole number of bytes/],
    [Number.NaN, /whole number of bytes/],
  ];
  for (const [input, re] of bad) {
    it(`rejects ${JSON.stringify(input)}`, () => assert.throws(() => parseByteSize(input), re));
  }
});

describe('formatByteSize', () => {
  it('uses the largest exact binary unit', () => {
    assert.equal(formatByteSize(4 * 2 ** 20), '4MiB');
    assert.equal(formatByteSize(1088 * 1024), '1088KiB');
    assert.equal(formatByteSize(2 ** 30), '1GiB');
    assert.equal(formatByteSize(1000), '1000B');
    assert.equal(formatByteSize(0), '0B');
  });
  it('round-trips through parseByteSize', () => {
    for (const n of [1, 1023, 1024, 65536, 3 * 2 ** 20, 5 * 2 ** 40]) assert.equal(parseByteSize(formatByteSize(n)), n);
  });
});
