// One vcluster: its vnodes (hostname, IP, host, state), start/stop/delete,
// scale out and in, save a vnode as an image, port mappings, and the link
// to its Jupyter workspace. Every action shows its progress and the node's
// answer next to the control that started it; the page polls every second
// while the vnodes converge, and slowly otherwise.

import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import { useApp } from '../app-context.ts'
import {
  ActionStatus,
  Button,
  ConfirmButton,
  Loading,
  Notice,
  PageHeader,
  SelectField,
  StatusBadge,
  shortId,
  TextField,
  useAction,
  useLoad,
  wholeNumber,
} from '../components.tsx'
import { Link, navigate } from '../router.tsx'
import { namePattern, nameRule, type Session, type Vcluster, type Vnode } from '../types.ts'
import { liveVnodes, vclusterConverging, vnodeState } from '../vcluster-status.ts'

const convergingPollMs = 1_000
const idlePollMs = 5_000

export function VclusterPage({ name }: { name: string }) {
  const { session, refreshSession } = useApp()
  const vcluster = useLoad(
    () => api.vcluster(name),
    [name],
    (vc) => (vc === null ? null : vclusterConverging(vc) ? convergingPollMs : idlePollMs),
  )
  const hostNames = useLoad(
    async () =>
      session.role === 'admin'
        ? new Map((await api.hosts()).hosts.map((host) => [host.id, host.name]))
        : new Map<string, string>(),
    [session.role],
  )

  if (vcluster.data === null) {
    return (
      <>
        <PageHeader title={name} />
        {vcluster.error === null ? (
          <Loading what={`the vcluster ${name}`} />
        ) : (
          <Notice kind="error">{vcluster.error}</Notice>
        )}
        <p>
          <Link href="/">Back to my vclusters</Link>
        </p>
      </>
    )
  }
  const vc = vcluster.data
  const afterChange = async () => {
    await Promise.all([vcluster.reload(), refreshSession()])
  }
  return (
    <>
      <nav aria-label="Breadcrumb" class="breadcrumb">
        <Link href="/">Vclusters</Link> <span aria-hidden="true">/</span> {vc.name}
      </nav>
      <Lifecycle vcluster={vc} onChange={afterChange} />
      {vcluster.error === null ? null : (
        <Notice kind="error">The page could not refresh: {vcluster.error}</Notice>
      )}
      <Vnodes
        vcluster={vc}
        session={session}
        hostNames={hostNames.data ?? new Map()}
        onChange={afterChange}
      />
      <ScaleOut vcluster={vc} session={session} onChange={afterChange} />
      <PortMappings vcluster={vc} session={session} onChange={refreshSession} />
    </>
  )
}

function Lifecycle({ vcluster, onChange }: { vcluster: Vcluster; onChange: () => Promise<void> }) {
  const { flash, refreshSession } = useApp()
  const [action, run] = useAction()
  const vnodes = liveVnodes(vcluster)
  const running = vnodes.filter((v) => v.observed === 'running').length
  const converging = vclusterConverging(vcluster)
  const workspace = `/go/${encodeURIComponent(vcluster.owner)}/${encodeURIComponent(vcluster.name)}/`

  const start = () =>
    run(`Starting ${vcluster.name}…`, async () => {
      await api.startVcluster(vcluster.name)
      await onChange()
      return `${vcluster.name} is starting; its vnodes come up one by one.`
    })
  const stop = () =>
    run(`Stopping ${vcluster.name}…`, async () => {
      await api.stopVcluster(vcluster.name)
      await onChange()
      return `${vcluster.name} is stopping; the vnodes keep their disks.`
    })
  const remove = () =>
    run(`Deleting ${vcluster.name}…`, async () => {
      await api.deleteVcluster(vcluster.name)
      await refreshSession()
      flash(`The vcluster ${vcluster.name} is being deleted with its vnodes.`)
      navigate('/')
    })

  return (
    <>
      <PageHeader
        title={
          <>
            {vcluster.name} <StatusBadge status={vcluster.status} />
          </>
        }
        subtitle={
          <>
            Subnet <code>{vcluster.subnet}</code>, gateway <code>{vcluster.gateway}</code>. {running} of{' '}
            {vnodes.length} vnodes running.
          </>
        }
        actions={
          <>
            {vcluster.status === 'running' ? (
              <a class="button button-primary" href={workspace} target="_blank" rel="noopener">
                Open workspace<span class="sr-only"> (opens a new tab)</span>
              </a>
            ) : null}
            {vcluster.desired === 'stopped' ? (
              <Button variant="secondary" busy={action.busy} onClick={() => void start()}>
                Start
              </Button>
            ) : (
              <Button variant="secondary" busy={action.busy} onClick={() => void stop()}>
                Stop
              </Button>
            )}
            <ConfirmButton
              label="Delete"
              context={vcluster.name}
              question={`Delete ${vcluster.name} and its ${vnodes.length} vnodes?`}
              confirmLabel="Delete for good"
              busy={action.busy}
              onConfirm={() => void remove()}
            />
          </>
        }
      />
      <ActionStatus state={action} />
      {converging && !action.busy ? (
        <p class="converging" role="status">
          <span class="spinner" aria-hidden="true" />
          {vcluster.status === 'deleting'
            ? 'Deleting the vnodes…'
            : `The hosts are bringing the vnodes to “${vcluster.desired}”: ${running} of ${vnodes.length} running.`}
        </p>
      ) : null}
    </>
  )
}

function Vnodes({
  vcluster,
  session,
  hostNames,
  onChange,
}: {
  vcluster: Vcluster
  session: Session
  hostNames: Map<string, string>
  onChange: () => Promise<void>
}) {
  const vnodes = liveVnodes(vcluster)
  return (
    <section class="card" aria-labelledby="vnodes-heading">
      <h2 id="vnodes-heading">Vnodes</h2>
      <table class="table responsive">
        <caption class="sr-only">The vnodes of {vcluster.name}</caption>
        <thead>
          <tr>
            <th scope="col">Hostname</th>
            <th scope="col">IP</th>
            <th scope="col">Host</th>
            <th scope="col">State</th>
            <th scope="col">Resources</th>
            <th scope="col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {vnodes.map((vnode) => (
            <VnodeRow
              key={vnode.index}
              vcluster={vcluster}
              vnode={vnode}
              session={session}
              hostName={vnode.host === null ? null : (hostNames.get(vnode.host) ?? null)}
              onlyOne={vnodes.length === 1}
              onChange={onChange}
            />
          ))}
        </tbody>
      </table>
    </section>
  )
}

function VnodeRow({
  vcluster,
  vnode,
  session,
  hostName,
  onlyOne,
  onChange,
}: {
  vcluster: Vcluster
  vnode: Vnode
  session: Session
  hostName: string | null
  onlyOne: boolean
  onChange: () => Promise<void>
}) {
  const [saving, setSaving] = useState(false)
  const [imageName, setImageName] = useState(`${vcluster.name}-${vnode.index}`)
  const [description, setDescription] = useState('')
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  const state = vnodeState(vnode)
  const detail = vnode.lastError !== '' ? vnode.lastError : vnode.pendingReason
  const imageError = namePattern.test(imageName.trim()) ? null : `Use ${nameRule}.`
  const imagesLeft = session.quota.images - session.usage.images

  const save = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (imageError !== null) return
    const image = imageName.trim()
    void run(`Saving ${vnode.hostname} as the image ${image}; this copies its disk…`, async () => {
      await api.saveVnode(vcluster.name, vnode.index, image, description.trim())
      setSaving(false)
      setChecked(false)
      await onChange()
      return `Saved ${vnode.hostname} as your private image ${image}.`
    })
  }
  const remove = () =>
    run(`Removing ${vnode.hostname}…`, async () => {
      await api.scaleIn(vcluster.name, vnode.index)
      await onChange()
    })

  const rowLabel = `vnode ${vnode.hostname}`
  return (
    <>
      <tr aria-label={rowLabel}>
        <th scope="row" data-label="Hostname">
          {vnode.hostname}
          {vnode.index === 0 ? <span class="muted small"> (workspace)</span> : null}
        </th>
        <td data-label="IP">
          <code>{vnode.ip}</code>
        </td>
        <td data-label="Host">
          {vnode.host === null ? (
            <span class="muted">not placed</span>
          ) : (
            <span title={vnode.host}>{hostName ?? shortId(vnode.host)}</span>
          )}
          {vnode.movingTo === null ? null : <span class="muted small"> → {shortId(vnode.movingTo)}</span>}
        </td>
        <td data-label="State">
          <StatusBadge status={state} />
          {detail === '' ? null : <p class="small state-detail">{detail}</p>}
        </td>
        <td data-label="Resources">
          {vnode.limits.cpuCores} cpu, {vnode.limits.memoryMb} MB, {vnode.limits.diskMb} MB disk
        </td>
        <td data-label="Actions" class="row-actions">
          <Button
            variant="secondary"
            aria-expanded={saving ? 'true' : 'false'}
            aria-label={`Save ${vnode.hostname} as an image`}
            onClick={() => setSaving(!saving)}
            disabled={action.busy}
          >
            Save as image
          </Button>
          {onlyOne ? null : (
            <ConfirmButton
              label="Remove"
              context={vnode.hostname}
              question={`Remove ${vnode.hostname} and its disk?`}
              confirmLabel={`Remove ${vnode.hostname}`}
              busy={action.busy}
              onConfirm={() => void remove()}
            />
          )}
        </td>
      </tr>
      {saving || action.message !== null || action.error !== null ? (
        <tr class="row-detail">
          <td colSpan={6}>
            {saving ? (
              <form
                class="inline-form"
                onSubmit={save}
                noValidate
                aria-label={`Save ${vnode.hostname} as an image`}
              >
                <TextField
                  label="Image name"
                  value={imageName}
                  onValue={setImageName}
                  error={checked ? imageError : null}
                  hint={`${imagesLeft} of ${session.quota.images} images left in your quota.`}
                  autoCapitalize="none"
                  spellcheck={false}
                />
                <TextField
                  label="Description (optional)"
                  value={description}
                  onValue={setDescription}
                  maxLength={1000}
                />
                <div class="form-actions">
                  <Button type="submit" variant="primary" busy={action.busy}>
                    Save image
                  </Button>
                  <Button variant="quiet" onClick={() => setSaving(false)}>
                    Cancel
                  </Button>
                </div>
              </form>
            ) : null}
            <ActionStatus state={action} />
            {action.message?.startsWith('Saved') === true ? (
              <p class="small">
                <Link href="/images">See it on the Images page</Link>, where you can share it.
              </p>
            ) : null}
          </td>
        </tr>
      ) : null}
    </>
  )
}

function ScaleOut({
  vcluster,
  session,
  onChange,
}: {
  vcluster: Vcluster
  session: Session
  onChange: () => Promise<void>
}) {
  const [count, setCount] = useState('1')
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  const n = wholeNumber(count)
  const vnodesLeft = session.quota.vnodes - session.usage.vnodes
  const { cpuCores, memoryMb, diskMb } = vcluster.limits
  let error: string | null = null
  if (n === null || n < 1) error = 'Use a whole number of 1 or more.'
  else if (n > vnodesLeft)
    error = `You have ${Math.max(0, vnodesLeft)} of ${session.quota.vnodes} vnodes left.`
  else if (n * cpuCores > session.quota.cpuCores - session.usage.cpuCores)
    error = `${n} more vnodes need ${n * cpuCores} cores; you have ${session.quota.cpuCores - session.usage.cpuCores} left.`
  else if (n * memoryMb > session.quota.memoryMb - session.usage.memoryMb)
    error = `${n} more vnodes need ${n * memoryMb} MB of memory; you have ${session.quota.memoryMb - session.usage.memoryMb} MB left.`
  else if (n * diskMb > session.quota.diskMb - session.usage.diskMb)
    error = `${n} more vnodes need ${n * diskMb} MB of disk; you have ${session.quota.diskMb - session.usage.diskMb} MB left.`

  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (error !== null || n === null) return
    void run(`Adding ${n} ${n === 1 ? 'vnode' : 'vnodes'}…`, async () => {
      await api.scaleOut(vcluster.name, n)
      setChecked(false)
      await onChange()
      return `Added ${n} ${n === 1 ? 'vnode' : 'vnodes'}; ${n === 1 ? 'it starts' : 'they start'} like the others.`
    })
  }
  return (
    <section class="card" aria-labelledby="scale-heading">
      <h2 id="scale-heading">Scale out</h2>
      <form class="inline-form" onSubmit={submit} noValidate>
        <TextField
          label="Vnodes to add"
          type="number"
          inputMode="numeric"
          min={1}
          value={count}
          onValue={setCount}
          error={checked ? error : null}
          hint={`Each gets ${cpuCores} cpu, ${memoryMb} MB memory, ${diskMb} MB disk, like the others.`}
        />
        <div class="form-actions">
          <Button type="submit" variant="secondary" busy={action.busy}>
            Scale out
          </Button>
        </div>
      </form>
      <ActionStatus state={action} />
    </section>
  )
}

function PortMappings({
  vcluster,
  session,
  onChange,
}: {
  vcluster: Vcluster
  session: Session
  onChange: () => Promise<void>
}) {
  const ports = useLoad(() => api.ports(vcluster.name).then((answer) => answer.ports), [vcluster.name])
  const vnodes = liveVnodes(vcluster)
  const [index, setIndex] = useState(String(vnodes[0]?.index ?? 0))
  const [port, setPort] = useState('')
  const [checked, setChecked] = useState(false)
  const [addAction, runAdd] = useAction()
  const [removeAction, runRemove] = useAction()
  const portNumber = wholeNumber(port)
  const portError =
    portNumber === null || portNumber < 1 || portNumber > 65_535 ? 'Use a port number from 1 to 65535.' : null
  const left = session.quota.portMappings - session.usage.portMappings

  const add = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (portError !== null || portNumber === null) return
    void runAdd(`Publishing port ${portNumber}…`, async () => {
      const mapping = await api.addPort(vcluster.name, Number(index), portNumber)
      setPort('')
      setChecked(false)
      await Promise.all([ports.reload(), onChange()])
      return `Port ${mapping.port} of vnode ${mapping.index} is now public port ${mapping.publicPort} on every node.`
    })
  }
  const remove = (publicPort: number) =>
    runRemove(`Removing public port ${publicPort}…`, async () => {
      await api.removePort(vcluster.name, publicPort)
      await Promise.all([ports.reload(), onChange()])
      return `Public port ${publicPort} is closed.`
    })

  return (
    <section class="card" aria-labelledby="ports-heading">
      <h2 id="ports-heading">Port mappings</h2>
      <p class="muted">
        A mapping opens the same public port on every node of the cluster and forwards TCP to a port of a
        vnode.
      </p>
      {ports.error === null ? null : <Notice kind="error">{ports.error}</Notice>}
      {ports.data !== null && ports.data.length > 0 ? (
        <table class="table responsive">
          <caption class="sr-only">Port mappings of {vcluster.name}</caption>
          <thead>
            <tr>
              <th scope="col">Public port</th>
              <th scope="col">Vnode</th>
              <th scope="col">Vnode port</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {ports.data.map((mapping) => (
              <tr key={mapping.publicPort}>
                <th scope="row" data-label="Public port">
                  {mapping.publicPort}
                </th>
                <td data-label="Vnode">
                  {vcluster.vnodes.find((v) => v.index === mapping.index)?.hostname ??
                    `vnode ${mapping.index}`}
                </td>
                <td data-label="Vnode port">
                  {mapping.port}/{mapping.protocol}
                </td>
                <td data-label="Actions" class="row-actions">
                  <Button
                    variant="danger"
                    busy={removeAction.busy}
                    aria-label={`Remove public port ${mapping.publicPort}`}
                    onClick={() => void remove(mapping.publicPort)}
                  >
                    Remove
                  </Button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : ports.data !== null ? (
        <p class="empty">No port mappings.</p>
      ) : null}
      <ActionStatus state={removeAction} />
      <form class="inline-form" onSubmit={add} noValidate aria-label="Add a port mapping">
        <SelectField
          label="Vnode"
          value={index}
          onValue={setIndex}
          options={vnodes.map((vnode) => ({
            value: String(vnode.index),
            label: `${vnode.hostname} (${vnode.ip})`,
          }))}
        />
        <TextField
          label="Port on the vnode"
          type="number"
          inputMode="numeric"
          min={1}
          max={65_535}
          value={port}
          onValue={setPort}
          error={checked ? portError : null}
          hint={`${Math.max(0, left)} of ${session.quota.portMappings} mappings left.`}
        />
        <div class="form-actions">
          <Button type="submit" variant="secondary" busy={addAction.busy}>
            Add mapping
          </Button>
        </div>
      </form>
      <ActionStatus state={addAction} />
    </section>
  )
}
