import path from 'node:path';
import { Router } from 'express';

/** Swagger UI's files, from the swagger-ui-dist package: served by the app itself, no CDN. */
const ASSETS = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png']);

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>sockpit REST API</title>
  <link rel="icon" href="/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
`;

// A file of its own rather than an inline script, so the Content-Security-Policy stays `script-src 'self'`.
const INIT = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/api/v1/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
`;

/** /api/docs: the OpenAPI document rendered for a person. */
export function docsRoutes(): Router {
  const dir = path.dirname(require.resolve('swagger-ui-dist/package.json'));
  const r = Router();
  r.get('/', (_req, res) => {
    res.type('html').send(PAGE);
  });
  r.get('/init.js', (_req, res) => {
    res.type('application/javascript').send(INIT);
  });
  r.get('/:file', (req, res, next) => {
    const file = String(req.params.file);
    if (!ASSETS.has(file)) return next();
    res.sendFile(path.join(dir, file), { maxAge: '1d' });
  });
  return r;
}
