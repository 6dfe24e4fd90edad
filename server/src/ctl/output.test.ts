import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { cellText, render, renderTable, type Column } from './output.js';

interface Row {
  name: string;
  uid: number;
  groups: string[];
  email: string | null;
  on: boolean;
}

const COLUMNS: Column<Row>[] = [
  { header: 'name', value: (r) => r.name },
  { header: 'uid', value: (r) => r.uid },
  { header: 'groups', value: (r) => r.groups },
  { header: 'email', value: (r) => r.email },
  { header: 'on', value: (r) => r.on },
];

const ROWS: Row[] = [
  { name: 'alice', uid: 1001, groups: ['editors', 'viewers'], email: 'alice@example.com', on: true },
  { name: 'bob', uid: 10000, groups: [], email: null, on: false },
];

describe('table output', () => {
  it('aligns columns under upper-case headers, three spaces apart, without borders or trailing spaces', () => {
    assert.equal(
      renderTable(COLUMNS, ROWS),
      [
        'NAME    UID     GROUPS            EMAIL               ON',
        'alice   1001    editors,viewers   alice@example.com   true',
        'bob     10000   <none>            <none>              false',
        '',
      ].join('\n'),
    );
  });

  it('has no colour codes or box-drawing characters', () => {
    const t = renderTable(COLUMNS, ROWS);
    // eslint-disable-next-line no-control-regex
    assert.doesNotMatch(t, /\u001b|[\u2500-\u257f]/);
  });

  it('a single object is a one-row table', () => {
    assert.equal(render('table', ROWS[0]!, COLUMNS).split('\n').length, 3);
  });

  it('keeps a row on one line when a value has line breaks', () => {
    const t = renderTable([{ header: 'v', value: (r: { v: string }) => r.v }], [{ v: 'a\nb' }]);
    assert.equal(t, 'V\na b\n');
  });

  it('cells: lists, empty values, objects', () => {
    assert.equal(cellText(['a', 'b']), 'a,b');
    assert.equal(cellText([]), '<none>');
    assert.equal(cellText(null), '<none>');
    assert.equal(cellText(''), '<none>');
    assert.equal(cellText({}), '<none>');
    assert.equal(cellText({ path: '/data', block_size: 4 }), '{"path":"/data","block_size":4}');
    assert.equal(cellText(0), '0');
    assert.equal(cellText(false), 'false');
  });
});

describe('json and yaml output', () => {
  it('json is the objects, pretty-printed, unchanged', () => {
    const text = render('json', ROWS, COLUMNS);
    assert.equal(text, `${JSON.stringify(ROWS, null, 2)}\n`);
    assert.deepEqual(JSON.parse(text), ROWS);
  });

  it('yaml parses back to the same objects, long strings on one line', () => {
    const long = { token_like: 'x'.repeat(300), nested: { list: [1, 'two', null], empty: [] } };
    const text = render('yaml', [long], []);
    assert.deepEqual(YAML.parse(text), [long]);
    assert.equal(text.split('\n').filter((l) => l.includes('xxxx')).length, 1);
    assert.deepEqual(YAML.parse(render('yaml', ROWS, COLUMNS)), ROWS);
  });
});
