/**
 * TLS and mutual TLS for every gRPC server and client, from certificate and key paths in config
 * (`tls.*`, `DUEL_TLS_*`): a service with `tls.cert` and `tls.key` serves TLS only; with
 * `tls.clientAuth` it also demands a client certificate signed by `tls.ca`. The same settings make
 * a process's outgoing calls (the orchestrator's to the workers, the CLI's to the orchestrator)
 * trust `tls.ca` and present `tls.cert` as their client certificate.
 */
import { readFileSync } from 'node:fs';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { z } from 'zod';
import { DuelError } from '../errors.js';
import { loadConfig } from './config.js';

export const tlsSchema = z
  .object({
    /** PEM certificate chain this process presents (as a server, and as a client under mTLS). */
    cert: z.string().default(''),
    /** PEM private key of `cert`. */
    key: z.string().default(''),
    /** PEM CA bundle to trust: the server's issuer for clients, client certificates' for servers. */
    ca: z.string().default(''),
    /** Servers refuse clients without a certificate signed by `ca` (mutual TLS). */
    clientAuth: z.boolean().default(false),
    /**
     * Under mutual TLS, the client certificates (by subject common name or DNS name) allowed to
     * call this server's RPCs; empty allows every certificate `ca` signed. The workers list the
     * orchestrator's, the orchestrator its operators': a stolen sampler key then cannot train.
     */
    allowedClients: z.array(z.string().min(1)).default([]),
  })
  .prefault({})
  .superRefine((t, ctx) => {
    if ((t.cert === '') !== (t.key === ''))
      ctx.addIssue({
        code: 'custom',
        path: [t.cert ? 'key' : 'cert'],
        message: 'tls.cert and tls.key go together',
      });
    if (t.clientAuth && (t.ca === '' || t.cert === ''))
      ctx.addIssue({
        code: 'custom',
        path: ['clientAuth'],
        message: 'mutual TLS needs tls.ca, tls.cert and tls.key',
      });
    if (t.allowedClients.length > 0 && !t.clientAuth)
      ctx.addIssue({
        code: 'custom',
        path: ['allowedClients'],
        message:
          'naming allowed clients needs tls.clientAuth (without a client certificate there is no name)',
      });
  });

export type TlsConfig = z.infer<typeof tlsSchema>;

const read = (path: string, field: string): Buffer => {
  try {
    return readFileSync(path);
  } catch (e) {
    throw DuelError.invalidArgument([{ field, description: `cannot read ${path}: ${(e as Error).message}` }]);
  }
};

const tlsEnabled = (t: TlsConfig) => t.cert !== '' || t.ca !== '';

/** Insecure without a certificate; TLS (mutual with clientAuth) with one. */
export function serverCredentials(t: TlsConfig): grpc.ServerCredentials {
  if (t.cert === '') return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    t.ca ? read(t.ca, 'tls.ca') : null,
    [{ cert_chain: read(t.cert, 'tls.cert'), private_key: read(t.key, 'tls.key') }],
    t.clientAuth,
  );
}

/** Insecure when nothing is set; otherwise TLS trusting `ca` (or the system roots), with `cert` as client certificate. */
export function channelCredentials(t: TlsConfig): grpc.ChannelCredentials {
  if (!tlsEnabled(t)) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    t.ca ? read(t.ca, 'tls.ca') : null,
    t.key ? read(t.key, 'tls.key') : null,
    t.cert ? read(t.cert, 'tls.cert') : null,
  );
}

/** The CLI's client settings: DUEL_TLS_CA, DUEL_TLS_CERT, DUEL_TLS_KEY. */
export function clientTlsFromEnv(env: NodeJS.ProcessEnv = process.env): TlsConfig {
  return loadConfig(z.object({ tls: tlsSchema }), { env }).tls;
}

/** The names a peer certificate answers to: its subject CN and its DNS subject alternative names. */
export function certificateNames(cert: PeerCertificate | undefined): string[] {
  if (!cert) return [];
  const cn = cert.subject?.CN;
  const dns = (cert.subjectaltname ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4));
  return [...(Array.isArray(cn) ? cn : cn ? [cn] : []), ...dns];
}

/**
 * Per-call authorization for a server with `tls.allowedClients`: a call whose client certificate
 * answers to none of the names is PERMISSION_DENIED, naming the certificate. Undefined when every
 * authenticated client may call.
 */
export function clientAuthorizer(t: TlsConfig): ((peer: PeerCertificate | undefined) => void) | undefined {
  if (t.allowedClients.length === 0) return undefined;
  const allowed = new Set(t.allowedClients);
  return (peer) => {
    const names = certificateNames(peer);
    if (!names.some((n) => allowed.has(n)))
      throw new DuelError(
        grpc.status.PERMISSION_DENIED,
        `client certificate ${names.length ? `'${names.join("', '")}'` : '(none)'} is not in this server's tls.allowedClients`,
      );
  };
}
