//! A receiver's copy of the cluster metadata, kept current by applying a
//! watch stream's snapshot and deltas.

use std::collections::BTreeMap;

use runnel_types::{SpuId, TopicName};

use crate::{Change, MetadataUpdate, Object, ObjectKey, Partition, PartitionKey, Spu, Topic};

#[derive(Debug, Clone, Default)]
pub struct MetadataView {
    pub version: u64,
    pub topics: BTreeMap<TopicName, Topic>,
    pub partitions: BTreeMap<PartitionKey, Partition>,
    pub spus: BTreeMap<SpuId, Spu>,
}

impl MetadataView {
    pub fn apply(&mut self, update: MetadataUpdate) {
        match update {
            MetadataUpdate::Snapshot { version, objects } => {
                *self = MetadataView {
                    version,
                    ..MetadataView::default()
                };
                for object in objects {
                    self.upsert(object);
                }
            }
            MetadataUpdate::Delta { version, changes } => {
                self.version = version;
                for change in changes {
                    match change {
                        Change::Upsert(object) => self.upsert(object),
                        Change::Delete(key) => self.delete(&key),
                    }
                }
            }
        }
    }

    fn upsert(&mut self, object: Object) {
        match object {
            Object::Topic(topic) => {
                self.topics.insert(topic.spec.name.clone(), topic);
            }
            Object::Partition(partition) => {
                self.partitions
                    .insert(partition.spec.key.clone(), partition);
            }
            Object::Spu(spu) => {
                self.spus.insert(spu.spec.id, spu);
            }
        }
    }

    fn delete(&mut self, key: &ObjectKey) {
        match key {
            ObjectKey::Topic(name) => {
                self.topics.remove(name);
            }
            ObjectKey::Partition(key) => {
                self.partitions.remove(key);
            }
            ObjectKey::Spu(id) => {
                self.spus.remove(id);
            }
        }
    }

    /// The partitions of `topic`, in partition order.
    pub fn partitions_of<'a>(
        &'a self,
        topic: &'a TopicName,
    ) -> impl Iterator<Item = &'a Partition> {
        self.partitions
            .values()
            .filter(move |partition| &partition.spec.key.topic == topic)
    }

    /// The public address of the SPU leading `key`, if it has an online
    /// leader.
    pub fn leader_address(&self, key: &PartitionKey) -> Option<(SpuId, &str)> {
        let leader = self.partitions.get(key)?.status.leader?;
        let spu = self.spus.get(&leader).filter(|spu| spu.online)?;
        Some((leader, spu.spec.public_addr.as_str()))
    }
}
