// @ts-check
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  eslint.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // The protocol core is pure: no I/O, no clocks, no randomness.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: ['node:fs*', 'node:net', 'node:http', 'node:child_process', 'node:dgram', 'lmdb', '*/runtime/*', '*/frontends/*'],
      }],
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'core is clock-free: time arrives as input' },
        { object: 'Math', property: 'random', message: 'core is deterministic' },
        { object: 'performance', property: 'now', message: 'core is clock-free' },
      ],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval', 'setImmediate', 'process'],
    },
  },
);
