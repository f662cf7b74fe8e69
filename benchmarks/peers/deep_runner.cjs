// Run deep-email-validator over a list of addresses against the mail lab, N at a time.
//
// Reads {"nameserver": "127.0.0.1:5353", "addresses": [...], "concurrency": 10,
// "sender": "..."} as JSON on stdin and writes {"elapsed": s, "results": [{"address",
// "valid", "reason", "ms"}]} to stdout. The library has no resolver option, so DNS is patched
// in this process only: c-ares asks the lab NSD and dns.lookup (used by net.createConnection)
// resolves through it, returning loopback addresses only.
'use strict';

const dns = require('dns');
const fs = require('fs');
const net = require('net');
const { validate } = require('deep-email-validator');

function patchDns(nameserver) {
  dns.setServers([nameserver]);
  const resolver = new dns.Resolver();
  resolver.setServers([nameserver]);
  dns.lookup = (hostname, options, callback) => {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    if (typeof options === 'number') options = { family: options };
    const all = Boolean(options && options.all);
    const family = net.isIP(hostname);
    if (family) {
      process.nextTick(() =>
        all ? callback(null, [{ address: hostname, family }]) : callback(null, hostname, family));
      return;
    }
    resolver.resolve4(hostname, (err, addresses) => {
      const found = (addresses || []).filter((a) => a.startsWith('127.'));
      if (err || found.length === 0) {
        const error = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
        error.code = 'ENOTFOUND';
        error.hostname = hostname;
        callback(error);
        return;
      }
      if (all) callback(null, found.map((address) => ({ address, family: 4 })));
      else callback(null, found[0], 4);
    });
  };
}

function describe(out) {
  if (out.valid) return null;
  const detail = out.validators[out.reason];
  return `${out.reason}: ${(detail && detail.reason) || ''}`;
}

async function main() {
  const job = JSON.parse(fs.readFileSync(0, 'utf8'));
  patchDns(job.nameserver);
  const addresses = job.addresses;
  const results = new Array(addresses.length);
  let next = 0;
  async function worker() {
    while (next < addresses.length) {
      const index = next++;
      const email = addresses[index];
      const start = process.hrtime.bigint();
      const options = {
        email,
        validateRegex: true,
        validateMx: true,
        validateTypo: false, // mailcheck "corrects" every .test domain to a real one
        validateDisposable: true,
        validateSMTP: true,
      };
      if (job.sender) options.sender = job.sender; // else the library's own default sender
      const out = await validate(options);
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      results[index] = { address: email, valid: out.valid, reason: describe(out), ms };
    }
  }
  const start = process.hrtime.bigint();
  const workers = [];
  for (let i = 0; i < Math.max(1, job.concurrency || 10); i++) workers.push(worker());
  await Promise.all(workers);
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(JSON.stringify({ elapsed, results }));
}

main().catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n');
  process.exit(1);
});
