import { createDocument, ZodOpenApiOperationObject, ZodOpenApiPathsObject, ZodOpenApiResponsesObject } from 'zod-openapi';
import type { Operation } from './operation';
import { Problem } from './schemas';

const PROBLEM_TEXT: Record<number, string> = {
  400: 'Bad input: a parameter or the body is invalid (see `detail` and `issues`), or a key or a parameter named like a credential is in the query string',
  401: 'No credentials, or an unknown or revoked key, or a key whose user was removed',
  403: "The caller's role is too low, or a browser session sent an unsafe request without its CSRF token",
  404: 'No such device, command or key',
  409: 'It exists already',
  413: 'The body is larger than 16 KiB',
  415: 'The body is not application/json',
  429: 'Too many requests from this address or with this key; see Retry-After',
  500: 'Something went wrong on the server',
};

/** Problem statuses any operation can answer (see Operation.problems). */
const EVERY_OPERATION = [400, 401, 429, 500];

/** The OpenAPI 3.1 document of the operations, from the same zod schemas that validate them. */
export function openApiDocument(ops: Operation[], version: string): object {
  const paths: ZodOpenApiPathsObject = {};
  for (const op of ops) {
    const responses: ZodOpenApiResponsesObject = {};
    for (const [status, spec] of Object.entries(op.responses)) {
      responses[status as '200'] = spec.content
        ? { description: spec.description, content: Object.fromEntries(Object.entries(spec.content).map(([type, schema]) => [type, { schema }])) }
        : { description: spec.description };
    }
    // Every operation can be 400: the query is checked for credentials before any operation runs.
    for (const status of [...new Set([...op.problems, ...EVERY_OPERATION])].sort()) {
      responses[String(status) as '400'] = { description: PROBLEM_TEXT[status] ?? 'Error', content: { 'application/problem+json': { schema: Problem } } };
    }
    const o: ZodOpenApiOperationObject = {
      operationId: op.id,
      tags: [op.tag],
      summary: op.summary,
      description: [op.description, `Role: **${op.role}** or higher.`].filter(Boolean).join('\n\n'),
      requestParams: { ...(op.params ? { path: op.params as never } : {}), ...(op.query ? { query: op.query as never } : {}) },
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: op.body } } } } : {}),
      responses,
      security: op.sessionOnly ? [{ session: [] }] : [{ apiKey: [] }, { session: [] }],
    };
    paths[op.path] = { ...paths[op.path], [op.method]: o };
  }
  return createDocument({
    openapi: '3.1.0',
    info: {
      title: 'sockpit REST API',
      version,
      description:
        'For scripts and integrations. Send an API key as `Authorization: Bearer KEY` (never in the URL), or use the browser session ' +
        '(unsafe methods then need the `X-CSRF-Token` header). Errors are `application/problem+json` (RFC 9457). See docs/api.md.',
    },
    servers: [{ url: '/api/v1' }],
    tags: [
      { name: 'devices', description: 'The fleet' },
      { name: 'telemetry', description: 'Readings out, as JSON or CSV' },
      { name: 'commands', description: 'Commands to devices and their answers' },
      { name: 'keys', description: 'API keys (browser session only)' },
    ],
    paths,
    components: {
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: 'An API key made in the page (API keys) or with `npx sockpit apikey add`' },
        session: { type: 'apiKey', in: 'cookie', name: 'sockpit.sid', description: 'The browser session; unsafe methods also need the X-CSRF-Token header' },
      },
    },
  });
}
