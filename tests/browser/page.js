// The browser test's page: matrix-js-sdk, unchanged, driving presenced
// from another origin (so every call goes through CORS and most through a
// preflight). Registers alice and bob, puts them in a room, has bob sync
// and checks that alice's presence changes reach him. Reports to
// run.mjs through `window.result` ({done, passed, failed, lines}).
import * as sdk from "matrix-js-sdk";

const HS = new URLSearchParams(location.search).get("hs");
const PASSWORD = "correct horse battery staple";
// One "wait until bob sees it" step; run.mjs bounds the whole page.
const SEE_TIMEOUT_MS = 30_000;

const result = { done: false, passed: 0, failed: 0, lines: [] };
let alice, bob;
window.result = result;

function report(ok, name, detail = "") {
    ok ? result.passed++ : result.failed++;
    const line = `${ok ? "ok  " : "FAIL"} ${name}${detail ? ": " + detail : ""}`;
    result.lines.push(line);
    console.log(line);
    document.getElementById("log").textContent += line + "\n";
}

// What a thrown error says: matrix-js-sdk raises MatrixError for an answer
// it could read, ConnectionError when the browser hid it (a CORS refusal).
function describe(e) {
    return `${e?.name}: ${e?.errcode ?? ""} ${e?.message ?? e}`.trim();
}

// The UIA round trip a client does: the first request learns the flows
// (a 401 the page must be able to read), the second completes m.login.dummy.
async function register(name) {
    const anon = sdk.createClient({ baseUrl: HS });
    const body = { username: name, password: PASSWORD, initial_device_display_name: "browser-test" };
    let session;
    try {
        await anon.registerRequest(body);
        throw new Error("register without auth was not a UIA 401");
    } catch (e) {
        if (e?.httpStatus !== 401 || !e.data?.flows) throw e;
        session = e.data.session;
    }
    const auth = session ? { type: "m.login.dummy", session } : { type: "m.login.dummy" };
    const r = await anon.registerRequest({ ...body, auth });
    return sdk.createClient({
        baseUrl: HS,
        userId: r.user_id,
        accessToken: r.access_token,
        deviceId: r.device_id,
    });
}

// Resolves when `test()` holds for bob's view of `userId`, checked at
// each presence event and once now; rejects after SEE_TIMEOUT_MS.
function seen(client, userId, test) {
    return new Promise((resolve, reject) => {
        const check = () => {
            const user = client.getUser(userId);
            if (user && test(user)) {
                client.off(sdk.UserEvent.Presence, check);
                clearTimeout(timer);
                resolve(user);
            }
        };
        const timer = setTimeout(() => {
            client.off(sdk.UserEvent.Presence, check);
            const u = client.getUser(userId);
            reject(new Error(`not seen within ${SEE_TIMEOUT_MS} ms (last: ${u?.presence} ${JSON.stringify(u?.presenceStatusMsg)})`));
        }, SEE_TIMEOUT_MS);
        client.on(sdk.UserEvent.Presence, check);
        check();
    });
}

function prepared(client) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("first sync not done")), SEE_TIMEOUT_MS);
        client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED") {
                clearTimeout(timer);
                resolve();
            } else if (state === "ERROR") {
                clearTimeout(timer);
                reject(new Error(`sync error: ${describe(data?.error)}`));
            }
        });
    });
}

// Runs one step; a failed step ends the run (later steps need it).
async function step(name, fn) {
    try {
        const detail = await fn();
        report(true, name, detail);
    } catch (e) {
        report(false, name, describe(e));
        throw e;
    }
}

async function main() {
    if (!HS || new URL(HS).origin === location.origin) {
        throw new Error(`?hs= must name presenced on another origin (got ${HS})`);
    }
    let roomId;
    await step("a Matrix error is readable cross-origin (401 M_UNKNOWN_TOKEN)", async () => {
        const stranger = sdk.createClient({ baseUrl: HS, accessToken: "not-a-token" });
        try {
            await stranger.whoami();
        } catch (e) {
            if (e?.errcode === "M_UNKNOWN_TOKEN" && e.httpStatus === 401) return "";
            throw e;
        }
        throw new Error("whoami with a bad token succeeded");
    });
    await step("register alice (UIA, m.login.dummy)", async () => {
        alice = await register("alice");
        return alice.getUserId();
    });
    await step("register bob", async () => {
        bob = await register("bob");
        return bob.getUserId();
    });
    await step("alice creates a room and invites bob", async () => {
        roomId = (await alice.createRoom({ preset: "private_chat", invite: [bob.getUserId()] })).room_id;
        return roomId;
    });
    await step("bob joins", async () => {
        await bob.joinRoom(roomId);
    });
    await step("bob starts syncing (startClient)", async () => {
        const ready = prepared(bob);
        await bob.startClient({ initialSyncLimit: 1 });
        await ready;
    });
    const aliceId = alice.getUserId();
    await step("alice: online, status_msg; bob sees it", async () => {
        await alice.setPresence({ presence: "online", status_msg: "testing in a browser" });
        const u = await seen(bob, aliceId, (u) => u.presence === "online" && u.presenceStatusMsg === "testing in a browser");
        return `${u.presence} "${u.presenceStatusMsg}"`;
    });
    await step("alice: unavailable; bob sees it", async () => {
        await alice.setPresence({ presence: "unavailable" });
        const u = await seen(bob, aliceId, (u) => u.presence === "unavailable");
        return u.presence;
    });
}

main()
    .catch((e) => {
        if (!result.failed) report(false, "page", describe(e));
    })
    .finally(() => {
        for (const c of [alice, bob]) c?.stopClient();
        result.done = true;
    });
