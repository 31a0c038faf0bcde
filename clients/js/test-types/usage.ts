// Type-checked (tsc --noEmit) against index.d.ts: the API as a TypeScript app uses it.
// Lines marked @ts-expect-error must stay errors, so the declarations cannot become `any`.

import RealtimeClient, {
  RequestError, ConnectionClosedError, type Member, type Message, type MemberEvent, type Position,
} from "rtcore-client";

interface Profile { name: string; color?: string }

async function main(): Promise<void> {
  const rt = new RealtimeClient<Profile>({
    url: "ws://127.0.0.1:8765/",
    app: "chat",
    key: null,
    token: async () => "jwt",
    profile: { name: "ann" },
    echo: true,
    reconnect: true,
    backoffInitial: 500,
    backoffMax: 30000,
    requestTimeout: 10000,
    connectTimeout: 10000,
    bufferLimit: 100,
    failFast: false,
    refreshBefore: 30000,
  });
  await rt.open();
  const joined: boolean = await rt.join("lobby");
  const left: boolean = await rt.leave("lobby", false);
  const members: Member<Profile>[] = await rt.getMembers("lobby", { pageSize: 100 });
  const name: string | undefined = members[0]?.data?.name;
  const told: number = await rt.updateProfile({ name: "ann", color: "#fff" });
  const sent = await rt.send("lobby", "chat", { text: "hi" });
  const recipients: number = sent.recipients;
  const all = await rt.broadcast("alert", "soon", false);
  const mid: string = all.mid;
  const expires: number | null = await rt.refresh("jwt2");
  const page = await rt.history<{ text: string }>("feed", { limit: 10 });
  const top: [string, number] = [page.epoch, page.offset];
  const nextPage: Position | null = page.next;
  void top, nextPage;
  const off = rt.on<{ text: string }>("chat", (m: Message<{ text: string }>) => {
    const text: string | undefined = m.data?.text;
    const channel: string | null = m.channel;
    void text, channel;
  });
  off();
  rt.once("chat", (m) => void m.sender);
  rt.off("chat");
  rt.off();
  rt.onJoin((ev: MemberEvent<Profile>) => void ev.first);
  rt.onLeave((ev) => void ev.last);
  rt.onUpdate((ev) => void ev.member.data?.name);
  rt.onUserEvent((event, session, user, ts) => void [event, session, user, ts]);
  rt.onConnect((id, { reconnected }) => void [id, reconnected]);
  rt.onDisconnect((code: number, reason: string) => void [code, reason]);
  rt.onReconnectAttempt((attempt: number) => void attempt);
  rt.onError((err) => {
    if (err instanceof RequestError) {
      const code: string = err.code;
      const retry: number | null = err.retryAfter;
      void code, retry;
    }
  });
  rt.onSessionEnded((err: ConnectionClosedError) => void err.reason);
  const connected: boolean = rt.isConnected();
  const id: string | null = rt.getSocketId();
  await rt.close();
  void [joined, left, name, told, recipients, mid, expires, connected, id];

  // @ts-expect-error: send needs a channel and an event name
  await rt.send("lobby");
  // @ts-expect-error: profiles are typed
  await rt.updateProfile({ nom: "ann" });
  // @ts-expect-error: no such option
  new RealtimeClient({ retries: 3 });
  // @ts-expect-error: getSocketId may be null
  const sure: string = rt.getSocketId();
  void sure;
}

void main;
