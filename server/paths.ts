import path from 'node:path';

/**
 * The project's root (views/, public/). This module sits one level below it both as a source file
 * (server/paths.ts) and inside the bundle (dist/main.js), so the same expression holds in both.
 */
export const ROOT = path.resolve(__dirname, '..');
