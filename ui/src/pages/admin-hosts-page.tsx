// Admin: the Raft members (role, online, leader) and the hosts (capacity,
// what is placed there, drain with optional evacuation, undrain).

import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import {
  ActionStatus,
  Button,
  Checkbox,
  Loading,
  Notice,
  PageHeader,
  StatusBadge,
  shortId,
  useAction,
  useLoad,
} from '../components.tsx'
import type { Host, Members } from '../types.ts'

/** Members and hosts change without anyone acting here (a host goes offline): refresh now and then. */
const pollMs = 5_000

export function AdminHostsPage() {
  const members = useLoad(
    () => api.members(),
    [],
    () => pollMs,
  )
  const hosts = useLoad(
    () => api.hosts().then((answer) => answer.hosts),
    [],
    () => pollMs,
  )
  return (
    <>
      <PageHeader
        title="Hosts"
        subtitle="Every host runs the same docklet node; one Raft leader holds the state."
      />
      <MembersSection members={members.data} error={members.error} />
      <section class="card" aria-labelledby="hosts-heading">
        <h2 id="hosts-heading">Hosts</h2>
        {hosts.error === null ? null : <Notice kind="error">{hosts.error}</Notice>}
        {hosts.data === null ? (
          hosts.error === null ? (
            <Loading what="the hosts" />
          ) : null
        ) : (
          <table class="table responsive">
            <caption class="sr-only">Hosts</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col">Vnodes</th>
                <th scope="col">CPU used</th>
                <th scope="col">Memory used</th>
                <th scope="col">Disk used</th>
                <th scope="col">Drain</th>
              </tr>
            </thead>
            <tbody>
              {hosts.data.map((host) => (
                <HostRow key={host.id} host={host} onChange={hosts.reload} />
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  )
}

function MembersSection({ members, error }: { members: Members | null; error: string | null }) {
  return (
    <section class="card" aria-labelledby="members-heading">
      <h2 id="members-heading">Raft members</h2>
      {error === null ? null : <Notice kind="error">{error}</Notice>}
      {members === null ? (
        error === null ? (
          <Loading what="the members" />
        ) : null
      ) : (
        <>
          <p class="muted">
            Cluster <code>{members.cluster_id}</code>
            {members.term === undefined ? '' : `, term ${members.term}`}.{' '}
            {members.leader === null
              ? 'No leader answers right now: writes wait until a majority of the voters is back.'
              : null}
            {members.source === 'local' ? ' (As this node last saw them: the leader did not answer.)' : null}
          </p>
          <table class="table responsive">
            <caption class="sr-only">Raft members</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Online</th>
                <th scope="col">Address</th>
                <th scope="col">Portal</th>
                <th scope="col">Last contact</th>
              </tr>
            </thead>
            <tbody>
              {members.members.map((member) => {
                const leader = members.leader?.id === member.id
                return (
                  <tr key={member.id} aria-label={`member ${member.name}`}>
                    <th scope="row" data-label="Name">
                      <span title={member.id}>{member.name}</span>{' '}
                      <span class="muted small">{shortId(member.id)}</span>
                    </th>
                    <td data-label="Role">
                      {member.role}
                      {leader ? (
                        <>
                          {' '}
                          <StatusBadge status="running" label="leader" />
                        </>
                      ) : null}
                      {member.leaving ? <StatusBadge status="drained" label="leaving" /> : null}
                    </td>
                    <td data-label="Online">
                      <StatusBadge status={member.online ? 'online' : 'offline'} />
                    </td>
                    <td data-label="Address">
                      <code class="wrap">{member.address}</code>
                    </td>
                    <td data-label="Portal">
                      {member.portal === '' ? <span class="muted">none</span> : member.portal}
                    </td>
                    <td data-label="Last contact">
                      {member.last_contact_ms === null ? '—' : `${member.last_contact_ms} ms ago`}
                    </td>
                  </tr>
                )
              })}
            </tbody>
          </table>
        </>
      )}
    </section>
  )
}

function used(host: Host, key: 'cpuCores' | 'memoryMb' | 'diskMb', unit: string): string {
  const capacity = host.capacity?.[key]
  return capacity === undefined ? `${host.used[key]}${unit}` : `${host.used[key]} of ${capacity}${unit}`
}

function HostRow({ host, onChange }: { host: Host; onChange: () => Promise<void> }) {
  const [evacuate, setEvacuate] = useState(false)
  const [action, run] = useAction()
  const drain = () =>
    run(`Draining ${host.name}…`, async () => {
      const answer = await api.drainHost(host.id, evacuate)
      await onChange()
      const evacuation = answer.evacuation
      if (evacuation === undefined) return `${host.name} takes no new vnodes; its vnodes stay.`
      return `${host.name} takes no new vnodes; ${evacuation.moving} moving away${
        evacuation.stuck > 0 ? `, ${evacuation.stuck} with no other host that has room` : ''
      }.`
    })
  const undrain = () =>
    run(`Undraining ${host.name}…`, async () => {
      await api.undrainHost(host.id)
      await onChange()
      return `${host.name} takes new vnodes again.`
    })
  return (
    <tr aria-label={`host ${host.name}`}>
      <th scope="row" data-label="Name">
        <span title={host.id}>{host.name}</span>
        <span class="muted small wrap block">{host.address}</span>
      </th>
      <td data-label="State">
        <StatusBadge status={host.online ? 'online' : 'offline'} />
        {host.drained ? <StatusBadge status="drained" /> : null}
        {host.leaving ? <StatusBadge status="drained" label="leaving" /> : null}
        {host.unavailable === 'unreported' ? (
          <p class="small state-detail">No capacity reported yet: takes no vnodes until it does.</p>
        ) : null}
      </td>
      <td data-label="Vnodes">{host.vnodes}</td>
      <td data-label="CPU used">{used(host, 'cpuCores', ' cores')}</td>
      <td data-label="Memory used">{used(host, 'memoryMb', ' MB')}</td>
      <td data-label="Disk used">{used(host, 'diskMb', ' MB')}</td>
      <td data-label="Drain" class="row-actions">
        {host.drained ? (
          <Button variant="secondary" busy={action.busy} onClick={() => void undrain()}>
            Undrain<span class="sr-only"> {host.name}</span>
          </Button>
        ) : (
          <>
            <Checkbox label="evacuate its vnodes" checked={evacuate} onChecked={setEvacuate} />
            <Button variant="danger" busy={action.busy} onClick={() => void drain()}>
              Drain<span class="sr-only"> {host.name}</span>
            </Button>
          </>
        )}
        <ActionStatus state={action} />
      </td>
    </tr>
  )
}
