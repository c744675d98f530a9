#!/usr/bin/env node
/** Entry point of `duel` (dist/bin/main.js): builds the program for the command named and runs it. */
import { runEntry } from './entry.js';
import { buildProgram } from './program.js';

await runEntry(async () => (await buildProgram(process.argv)).parseAsync(process.argv));
