#!/usr/bin/env node
// Entry point of the `chainkv` command. Runs the TypeScript sources through tsx's loader.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/frontends/cli.ts');
await main(process.argv);
