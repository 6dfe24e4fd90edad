// The secret prompts: a new password that breaks the rules is refused as soon as it is typed, before
// it is asked for a second time (on a terminal, through the real prompt library), and a piped one
// is checked the same way.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { passwordProblem } from '../control/password-rules.js';
import { Prompter } from './prompt.js';
import { fakeIo } from './testing.js';

function terminal(): { prompter: Prompter; input: PassThrough; shown: () => string } {
  const input = new PassThrough();
  const output = new PassThrough();
  let text = '';
  output.on('data', (d: Buffer) => (text += d.toString()));
  const io = { ...fakeIo(), stdin: input, interactive: true, promptOutput: output };
  return { prompter: new Prompter(io), input, shown: () => text };
}

describe('Prompter.newSecret', () => {
  it('on a terminal, refuses a too short password before asking to repeat it', async () => {
    const { prompter, input, shown } = terminal();
    const pending = prompter.newSecret('New password:', 'new password', undefined, passwordProblem);
    input.write('short\r');
    await assert.rejects(pending, { message: 'the new password must be at least 8 characters long' });
    assert.match(shown(), /New password:/);
    assert.doesNotMatch(shown(), /Repeat it/);
    prompter.close();
  });

  it('on a terminal, a good password is asked twice', async () => {
    const { prompter, input, shown } = terminal();
    const pending = prompter.newSecret('New password:', 'new password', undefined, passwordProblem);
    input.write('long enough 1\r');
    // The second prompt appears only after the first answer was accepted.
    const deadline = Date.now() + 60_000;
    while (!/Repeat it/.test(shown()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    input.write('long enough 1\r');
    assert.equal(await pending, 'long enough 1');
    prompter.close();
  });

  it('from standard input, refuses a password that breaks the rules', async () => {
    const prompter = new Prompter(fakeIo({ stdin: 'short\n' }));
    await assert.rejects(prompter.newSecret('New password:', 'password', '--password', passwordProblem), {
      message: 'the password must be at least 8 characters long',
    });
  });
});
