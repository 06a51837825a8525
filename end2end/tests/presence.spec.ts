// Who is watching, on the page: the tabs of one browser share one stream, so eight tabs count
// once and a second browser counts again. Every tab shows it live (seven of the eight through
// the leader's relay), with the signed-in names, since this server is set to show them.
import { createHmac } from 'node:crypto';
import type { BrowserContext } from '@playwright/test';
import { test, expect } from './server';
import { serverOpenStreams } from './proxies';

const SECRET = 'a browser-test secret, 32 bytes+';
const TABS = 8;

test.use({
  serverOptions: {
    topics: 'chat',
    env: { EVENTS_TOKEN_SECRET: SECRET, EVENTS_PRESENCE_NAMES: 'on' },
  },
});

function token(sub: string): string {
  const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const exp = Math.floor(Date.now() / 1000) + 600;
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

async function signIn(context: BrowserContext, url: string, who: string): Promise<void> {
  await context.addCookies([{ name: 'events_token', value: token(who), url }]);
}

test(`${TABS} tabs of one browser count once, a second browser counts again, live in every tab`, async ({
  page,
  server,
  playwright,
  launchOptions,
}) => {
  test.setTimeout(90_000);
  await signIn(page.context(), server.url, 'bob');
  const tabs = [page];
  for (let i = 1; i < TABS; i++) tabs.push(await page.context().newPage());
  for (const t of tabs) {
    await t.goto('/');
    await expect(t.getByTestId('status')).toHaveText('live');
  }
  await expect.poll(() => serverOpenStreams(server.logs)).toBe(1);
  for (const t of tabs) await expect(t.getByTestId('presence')).toHaveText('1 watching: bob');

  // Another browser, a process of its own, with two tabs signed in as alice.
  const second = await playwright.chromium.launch(launchOptions);
  try {
    const context = await second.newContext({ baseURL: server.url });
    await signIn(context, server.url, 'alice');
    const others = [await context.newPage(), await context.newPage()];
    for (const t of others) {
      await t.goto('/');
      await expect(t.getByTestId('status')).toHaveText('live');
    }
    await expect.poll(() => serverOpenStreams(server.logs)).toBe(2);
    for (const t of [...tabs, ...others]) {
      await expect(t.getByTestId('presence')).toHaveText('2 watching: alice, bob');
    }
    const report = await (await fetch(`${server.url}/api/presence`)).json();
    expect(report.watching).toBe(2);
    expect(report.topics.chat.names).toEqual(['alice', 'bob']);
  } finally {
    await second.close();
  }
  // Its stream ended with it: every tab of the first browser sees it go.
  for (const t of tabs) await expect(t.getByTestId('presence')).toHaveText('1 watching: bob');
});
