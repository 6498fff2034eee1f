/**
 * GCI on AWS: images are AMIs in a home region; a group in a region the catalog says lacks
 * the AMI declares an AMI copy there, then its instances.
 */
export { Image, imageProblems } from "./image";
export type { DiskImportSource, ExistingAmiSource, ImageArgs, ImageSource } from "./image";
export { VirtualMachineGroup } from "./group";
export { amiIdProblems, planVirtualMachineGroup, virtualMachineGroupProblems } from "./plan";
export type { AmiReference, AmiSourcePlan, AwsGroupPlan, VirtualMachineGroupArgs } from "./plan";
