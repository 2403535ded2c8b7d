// Asymmetric signing of access tokens, when JWT_PRIVATE_KEY is configured: RS256 for an RSA key (2048 bits or
// more), ES256 for a P-256 key. Other services can then verify Quire's tokens with the public key published at
// /.well-known/jwks.json, without sharing a secret. (EdDSA is not offered: jsonwebtoken does not implement it.)
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";

export interface SigningKey {
  readonly algorithm: "RS256" | "ES256";
  readonly keyId: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** The public key as a JWK, with kid, alg and use, as published. */
  readonly jwk: Readonly<Record<string, string>>;
}

/** RFC 7638 thumbprint: SHA-256 over the key's required members in lexicographic order. */
function thumbprint(jwk: Record<string, string>): string {
  const members = jwk.kty === "RSA" ? ["e", "kty", "n"] : ["crv", "kty", "x", "y"];
  const canonical = JSON.stringify(Object.fromEntries(members.map((m) => [m, jwk[m]])));
  return createHash("sha256").update(canonical).digest("base64url");
}

/** Parses a PEM private key (literal "\n" sequences allowed, as env files often hold them); throws a phrase for the operator. */
export function parseSigningKey(pem: string, keyId?: string): SigningKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem.includes("\\n") ? pem.replaceAll("\\n", "\n") : pem);
  } catch {
    throw new Error("must be a PEM private key");
  }
  const publicKey = createPublicKey(privateKey);
  const details = privateKey.asymmetricKeyDetails ?? {};
  let algorithm: SigningKey["algorithm"];
  if (privateKey.asymmetricKeyType === "rsa" && (details.modulusLength ?? 0) >= 2048) algorithm = "RS256";
  else if (privateKey.asymmetricKeyType === "ec" && details.namedCurve === "prime256v1") algorithm = "ES256";
  else throw new Error("must be an RSA key of at least 2048 bits or a P-256 EC key");
  const exported = publicKey.export({ format: "jwk" }) as Record<string, string>;
  const kid = keyId ?? thumbprint(exported);
  return { algorithm, keyId: kid, privateKey, publicKey, jwk: { ...exported, kid, alg: algorithm, use: "sig" } };
}
