import http from 'node:http';
import type { Response } from 'express';

/** One issue of a request that failed validation: where (`query.limit`, `body.id`) and what. */
export interface ProblemIssue {
  path: string;
  message: string;
}

/**
 * An error answered as an RFC 9457 problem document (docs/api.md, "Errors"). Handlers throw it;
 * the API's one error handler writes it.
 */
export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly extra: { issues?: ProblemIssue[]; headers?: Record<string, string> } = {},
  ) {
    super(detail);
    this.name = 'ProblemError';
  }
}

export const badRequest = (detail: string, issues?: ProblemIssue[]) => new ProblemError(400, detail, issues ? { issues } : {});
export const notFound = (detail: string) => new ProblemError(404, detail);

/** Writes `application/problem+json`: `type`, `title` (the status's reason phrase), `status`, `detail`. */
export function sendProblem(res: Response, err: ProblemError): void {
  for (const [k, v] of Object.entries(err.extra.headers ?? {})) res.setHeader(k, v);
  const body: Record<string, unknown> = { type: 'about:blank', title: http.STATUS_CODES[err.status] ?? 'Error', status: err.status, detail: err.detail };
  if (err.extra.issues) body.issues = err.extra.issues;
  res.status(err.status).type('application/problem+json').send(JSON.stringify(body));
}
