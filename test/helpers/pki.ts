/**
 * A throwaway PKI for TLS tests: a CA, and certificates it signs for a server (127.0.0.1 and
 * localhost) and a client, written as PEM files. Keys come from Node's native RSA generator;
 * node-forge builds and signs the certificates (Node has no API to create one).
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';

interface Issued {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}

let serial = 1;

function keyPair() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const key = forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString());
  return { key, pub: forge.pki.setRsaPublicKey(key.n, key.e) };
}

function issue(cn: string, issuer: Issued | undefined, ext: object[]): Issued {
  const { key, pub } = keyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = pub;
  cert.serialNumber = (serial++).toString(16).padStart(2, '0');
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  cert.setSubject([{ name: 'commonName', value: cn }]);
  cert.setIssuer((issuer?.cert ?? cert).subject.attributes);
  cert.setExtensions(ext);
  cert.sign(issuer?.key ?? key, forge.md.sha256.create());
  return { cert, key };
}

export interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** Writes `<prefix>ca.pem`, `<prefix>server.{crt,key}` and `<prefix>client.{crt,key}` under `dir`. */
export function writePki(dir: string, prefix = ''): Pki {
  const ca = issue(`${prefix}duel test CA`, undefined, [
    { name: 'basicConstraints', cA: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true },
  ]);
  const server = issue('duel server', ca, [
    {
      name: 'subjectAltName',
      altNames: [
        { type: 7, ip: '127.0.0.1' },
        { type: 2, value: 'localhost' },
      ],
    },
    // A service presents the same certificate to its clients and, as a client, to other services.
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
  ]);
  const client = issue('duel client', ca, [{ name: 'extKeyUsage', clientAuth: true }]);
  const out = (name: string, pem: string) => {
    const p = join(dir, `${prefix}${name}`);
    writeFileSync(p, pem);
    return p;
  };
  return {
    ca: out('ca.pem', forge.pki.certificateToPem(ca.cert)),
    serverCert: out('server.crt', forge.pki.certificateToPem(server.cert)),
    serverKey: out('server.key', forge.pki.privateKeyToPem(server.key)),
    clientCert: out('client.crt', forge.pki.certificateToPem(client.cert)),
    clientKey: out('client.key', forge.pki.privateKeyToPem(client.key)),
  };
}
