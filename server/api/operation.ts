import type { Request, Response } from 'express';
import type { z } from 'zod';
import type { Role, User } from '../storage';

/** Who a request acts as: a key's user with the key's (lowered) role, or a browser session's user. */
export interface Caller {
  user: User;
  role: Role;
  via: 'key' | 'session';
  keyId: string | null;
}

export interface OpContext<P, Q, B> {
  req: Request;
  res: Response;
  params: P;
  query: Q;
  body: B;
  caller: Caller;
}

/** A JSON answer, or null when the handler wrote the response itself (a stream). */
export type Reply = { status: number; body?: unknown; headers?: Record<string, string> } | null;

export interface ResponseSpec {
  description: string;
  /** Media type → schema; none for 204. */
  content?: Record<string, z.ZodType>;
}

/**
 * One endpoint, declared once: the router validates requests and dispatches with it, and the
 * OpenAPI document is generated from it (server/api/openapi.ts).
 */
export interface Operation {
  id: string;
  method: 'get' | 'post' | 'delete';
  /** OpenAPI form, relative to /api/v1: `/devices/{id}`. */
  path: string;
  tag: string;
  summary: string;
  description?: string;
  /** The least role that may call it. */
  role: Role;
  /** Only a logged-in browser session may call it, not an API key (key management). */
  sessionOnly?: boolean;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  responses: Record<number, ResponseSpec>;
  /**
   * Statuses answered with a problem document besides 400, 401, 429 and 500, which every operation
   * has (400: a credential-named parameter in the query, or a bad path or query parameter).
   */
  problems: number[];
  handle(ctx: OpContext<any, any, any>): Promise<Reply>;
}

/** Declares an operation with its handler typed from its schemas. */
export function operation<P extends z.ZodType = z.ZodUndefined, Q extends z.ZodType = z.ZodUndefined, B extends z.ZodType = z.ZodUndefined>(
  o: Omit<Operation, 'handle' | 'params' | 'query' | 'body'> & {
    params?: P;
    query?: Q;
    body?: B;
    handle(ctx: OpContext<z.output<P>, z.output<Q>, z.output<B>>): Promise<Reply>;
  },
): Operation {
  return o as Operation;
}
